"""Reconstruction jobs: queued in the catalog, run by the reconstruction engine on Dask, results in the store.

A job decrypts its raw file into the service's private work directory, reconstructs it with
:func:`cloudmri_kernel.recon.engine.reconstruct_file` (slices fan out over the configured Dask cluster, or a
LocalCluster of ``workers`` processes), writes the MRD image series with its recipe, stores it encrypted as a
new Series and deletes the plaintext. Jobs that were queued or running when the service stopped run again at
the next start. Cancelling a queued job stops it at once; a running job is stopped after the slice in flight.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select

from cloudmri_kernel import __version__
from cloudmri_kernel.catalog.models import Dataset, Job, Series, utcnow
from cloudmri_kernel.errors import CloudMRIError

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    pass


class JobRunner:
    """Runs jobs one (or ``concurrency``) at a time in threads; their slices go to a Dask cluster.

    Args:
        workers: None runs slices in the job's thread (or on the configured Dask scheduler or gateway); N starts
            a LocalCluster of N single-threaded worker processes on 127.0.0.1 at the first job, kept until the
            service stops.
    """

    def __init__(self, state, workers: int | None = None, concurrency: int = 1):
        self.state = state
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cloudmri-job")
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._cluster = None

    def _scheduler(self) -> str | None:
        config = self.state.config
        if self.workers is None or config.dask_scheduler or config.dask_gateway:
            return None
        with self._lock:
            if self._cluster is None:
                from distributed import LocalCluster

                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             host="127.0.0.1", dashboard_address="127.0.0.1:0")
            return self._cluster.scheduler_address

    def submit(self, job_id: str) -> None:
        self._executor.submit(self._run_logged, job_id)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def resume_pending(self) -> int:
        """Queue again the jobs a stopped service left queued or running."""
        with self.state.catalog.session() as session:
            pending = list(session.scalars(select(Job.id).where(Job.status.in_(("queued", "running")))
                                           .order_by(Job.created_at)))
        for job_id in pending:
            self.submit(job_id)
        return len(pending)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._cluster is not None:
            self._cluster.close()

    def _is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def _set(self, job_id: str, **values) -> None:
        with self.state.catalog.session() as session:
            job = session.get(Job, job_id)
            for key, value in values.items():
                setattr(job, key, value)

    def _run_logged(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except JobCancelled:
            self._set(job_id, status="cancelled", finished_at=utcnow())
        except CloudMRIError as exc:
            self._set(job_id, status="failed", error=str(exc), finished_at=utcnow())
        except Exception as exc:
            log.exception("reconstruction job %s failed", job_id)
            self._set(job_id, status="failed", error=f"internal error: {type(exc).__name__}: {exc}",
                      finished_at=utcnow())

    def _run(self, job_id: str) -> None:
        from cloudmri_kernel.recon.engine import reconstruct_file
        from cloudmri_kernel.recon.output import write_recon
        from cloudmri_kernel.recon.recipe import parse_recipe

        with self.state.catalog.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.status not in ("queued", "running"):
                return
            if self._is_cancelled(job_id):
                raise JobCancelled
            dataset = session.get(Dataset, job.dataset_id)
            job.status, job.started_at, job.progress = "running", utcnow(), 0.0
            recipe_content, user = dict(job.recipe), job.user
            dataset_id, site, raw_sha = dataset.id, dataset.site, dataset.sha256

        def progress(done: int, total: int, _link) -> None:
            self._set(job_id, progress=done / total)
            if self._is_cancelled(job_id):
                raise JobCancelled

        recipe = parse_recipe(recipe_content) if recipe_content else None
        with tempfile.TemporaryDirectory(dir=self.state.work_dir) as scratch:
            raw = self.state.store.get_file(site, raw_sha, Path(scratch) / "raw.h5")
            scheduler = self._scheduler()
            output = reconstruct_file(raw, recipe, workers=None if scheduler else self.workers, progress=progress,
                                      scheduler=scheduler)
            images = write_recon(output, Path(scratch) / "images.h5", raw)
            stored = self.state.store.put(images, site)
        if self._is_cancelled(job_id):
            raise JobCancelled
        with self.state.catalog.session() as session:
            series = Series(dataset_id=dataset_id, site=site, sha256=stored.sha256, size=stored.size,
                            method=output.recipe.method, recipe=output.recipe.model_dump(mode="json"),
                            code_version=__version__, source_sha256=raw_sha, shape=list(output.images.shape),
                            created_by=user)
            session.add(series)
            session.flush()
            if self.state.ledger is not None:
                self.state.ledger.queue_series(series)
            job = session.get(Job, job_id)
            job.status, job.series_id, job.progress, job.finished_at = "done", series.id, 1.0, utcnow()
