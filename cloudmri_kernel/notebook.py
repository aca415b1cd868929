"""Notebook conveniences: the Cloud-MRI API as plain functions over one default client.

In the Cloud-MRI kernel (and in any kernel of a JupyterHub user server) nothing needs to be set up: the default
:class:`~cloudmri_kernel.client.Client` is made on first use from ``CLOUDMRI_SERVICE_URL`` and the user's own
token (``CLOUDMRI_SERVICE_TOKEN``, ``CLOUDMRI_SERVICE_TOKEN_FILE`` or ``JUPYTERHUB_API_TOKEN``).

Example:
    >>> from cloudmri_kernel import notebook as cm  # doctest: +SKIP
    >>> dataset = cm.upload("scan.h5")  # doctest: +SKIP
    >>> series = cm.reconstruct(dataset["id"], {"method": "sense"})  # doctest: +SKIP
    >>> cm.images(series["id"]).shape  # doctest: +SKIP
    (1, 64, 64)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cloudmri_kernel.client import Client, Progress
from cloudmri_kernel.errors import CloudMRIError

__all__ = ["connect", "default_client", "whoami", "datasets", "dataset", "upload", "reconstruct", "images"]

_lock = threading.Lock()
_client: Client | None = None


def connect(url: str | None = None, token: str | None = None, **options) -> Client:
    """Make a new client the default one that the functions of this module use (the former one is closed).

    Args:
        url: the service's base URL; default ``CLOUDMRI_SERVICE_URL``.
        token: the caller's token; default ``CLOUDMRI_SERVICE_TOKEN``, ``…_TOKEN_FILE`` or ``JUPYTERHUB_API_TOKEN``.
        **options: further :class:`~cloudmri_kernel.client.Client` arguments (``timeout``, ``retries`` …).

    Returns:
        The new default client.

    Raises:
        UsageError: there is no token (outside JupyterHub, set ``CLOUDMRI_SERVICE_TOKEN_FILE``).
    """
    global _client
    made = Client(url, token, **options)
    with _lock:
        former, _client = _client, made
    if former is not None:
        former.close()
    return made


def default_client() -> Client:
    """The default client, connected on first use from the environment (see :func:`connect`)."""
    global _client
    with _lock:
        if _client is None:
            _client = Client()
        return _client


def whoami() -> dict:
    """Who the service takes you for: ``{"user": …, "site": …, "scopes": [...]}``."""
    return default_client().whoami()


def datasets(**filters) -> list[dict]:
    """Datasets you may see; filters: site, subject, acquired_from, acquired_to, sequence, field_strength_t, text,
    limit, offset (e.g. ``datasets(site="siteA", sequence="GRE")``)."""
    return default_client().datasets(**filters)


def dataset(dataset_id: str) -> dict:
    """One dataset's catalog record (hash, site, header summary)."""
    return default_client().dataset(dataset_id)


def upload(path: str | Path, progress: Progress | None = None) -> dict:
    """Upload an MRD raw file in resumable chunks; returns the new dataset.

    Args:
        path: the MRD (ISMRMRD HDF5) file.
        progress: called with (bytes sent, total bytes) after each chunk.
    """
    return default_client().upload(path, progress=progress)


def reconstruct(dataset_id: str, recipe: dict | None = None, wait: bool = True, timeout: float | None = None,
                progress: Callable[[dict], None] | None = None) -> dict:
    """Reconstruct a dataset on the service.

    Interrupting the kernel while it waits cancels the job on the service.

    Args:
        dataset_id: the dataset to reconstruct.
        recipe: the reconstruction recipe, e.g. ``{"method": "sense"}``; default the service's choice for the data.
        wait: wait for the job and return its series; False returns the submitted job at once.
        timeout: seconds to wait at most (the job goes on running on the service after a timeout).
        progress: called with the job's state (``status``, ``progress`` from 0 to 1) whenever it changes.

    Returns:
        The reconstructed series (``id``, ``shape``, ``method`` …), or the job when ``wait`` is False.

    Raises:
        CloudMRIError: the job failed or was cancelled, or it was still running after ``timeout`` seconds.
    """
    client = default_client()
    submitted = client.submit(dataset_id, recipe)
    if not wait:
        return submitted
    try:
        for job in client.watch(submitted["id"], timeout=timeout):  # the last state it yields is the final one
            if progress is not None:
                progress(job)
    except KeyboardInterrupt:
        client.cancel(submitted["id"])
        raise
    if job["status"] != "done":
        raise CloudMRIError(f"job {job['id']} on dataset {dataset_id} {job['status']}"
                            + (f": {job['error']}" if job.get("error") else ""))
    return client.series(job["series_id"])


def images(series_id: str, index: int | None = None) -> np.ndarray:
    """A series' magnitude images as float32 ``(n, y, x)``, or image ``index`` alone as ``(y, x)``."""
    return default_client().images(series_id, index)
