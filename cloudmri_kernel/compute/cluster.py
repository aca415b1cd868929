"""Dask clusters for reconstruction work: a ``LocalCluster`` of worker processes by default, an existing
scheduler (``CLOUDMRI_DASK_SCHEDULER=tcp://host:8786``) or Dask-Gateway (``CLOUDMRI_DASK_GATEWAY=URL``) when
configured. Tasks are independent (slices, repetitions, files) and return in submission order.

References:
    Rocklin M. Dask: Parallel Computation with Blocked algorithms and Task Scheduling. SciPy 2015.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from cloudmri_kernel.config import settings
from cloudmri_kernel.errors import UsageError


def _limit_threads() -> None:
    """One BLAS/torch thread per worker process: the cluster, not each task, provides the parallelism."""
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A connected ``distributed.Client``: ``scheduler``, the configured scheduler or gateway, else a LocalCluster
    of ``workers`` single-threaded processes on 127.0.0.1 (dashboard on a free port)."""
    from distributed import Client, LocalCluster

    config = settings()
    scheduler = scheduler or config.dask_scheduler
    if config.dask_gateway and not scheduler:
        try:
            from dask_gateway import Gateway
        except ImportError:
            raise UsageError("CLOUDMRI_DASK_GATEWAY is set but dask-gateway is not installed "
                             "(pip install dask-gateway)") from None
        with Gateway(config.dask_gateway) as gateway, gateway.new_cluster() as cluster:
            cluster.scale(workers or 2)
            with Client(cluster) as client:
                client.run(_limit_threads)
                yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler {scheduler} ({exc})") from None
        with client:
            client.run(_limit_threads)
            yield client
        return
    with LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.run(_limit_threads)
        yield client


def run_tasks(function: Callable[[Any], Any], tasks: Sequence[Any], workers: int | None = None,
              progress: Callable[[int, int, str | None], None] | None = None,
              scheduler: str | None = None) -> list[Any]:
    """Run ``function`` on every task and return the results in task order.

    ``workers=None`` (and no scheduler given or configured) runs in this process; otherwise on a Dask cluster:
    the scheduler at ``scheduler`` (e.g. a long-lived cluster of the API service), the configured one, or a
    LocalCluster of ``workers`` processes. ``progress(done, total, dashboard_link)`` is called as tasks finish.
    """
    config = settings()
    if workers is None and not (scheduler or config.dask_scheduler or config.dask_gateway):
        results = []
        for done, task in enumerate(tasks, start=1):
            results.append(function(task))
            if progress:
                progress(done, len(tasks), None)
        return results
    from distributed import as_completed

    with dask_client(workers, scheduler) as client:
        link = client.dashboard_link
        futures = client.map(function, tasks, pure=False)
        position = {future.key: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        for done, future in enumerate(as_completed(futures), start=1):
            results[position[future.key]] = future.result()
            if progress:
                progress(done, len(futures), link)
        return results
