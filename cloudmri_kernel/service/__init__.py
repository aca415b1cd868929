"""The Cloud-MRI API service (FastAPI): the workbench's trust boundary. See :mod:`cloudmri_kernel.service.app`."""
