"""The Cloud-MRI API service (FastAPI): the workbench's trust boundary. See :mod:`cloudmri_kernel.service.app`."""

import os


def service_prefix() -> str:
    """The URL prefix the service answers under: JupyterHub's proxy forwards ``/services/NAME/…`` unchanged and
    tells a managed service its prefix in ``JUPYTERHUB_SERVICE_PREFIX``; stand-alone it is ``/``."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/").strip("/")
    return f"/{prefix}/" if prefix else "/"
