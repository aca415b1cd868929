"""Jupyter server extension of the Cloud-MRI Workbench, and the Cloud-MRI kernel.

The extension adds, under the server's base URL, ``cloudmri/health`` (can this server reach the Cloud-MRI API
service, and who is it there) and ``cloudmri/api/…``, a proxy to the service's ``/api/v1/…`` that signs requests
with the server owner's token. Enable it with ``jupyter server extension enable cloudmri_jupyter`` or the
``jupyter_server_config.d/cloudmri_jupyter.json`` file the package installs; install the kernel with
``python -m cloudmri_jupyter.install_kernel --sys-prefix``.
"""

from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict]:
    """How jupyter_server finds the extension (imported only when a server loads it)."""
    from cloudmri_jupyter.app import CloudMRIExtension

    return [{"module": "cloudmri_jupyter", "app": CloudMRIExtension}]
