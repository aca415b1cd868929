"""Reconstruction jobs: submit (202), watch, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from cloudmri_kernel.catalog.models import Dataset, Job
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch
from cloudmri_kernel.service.policy import Forbidden, check_dataset, require_scope
from cloudmri_kernel.service.schemas import JobIn, JobOut, Problem

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=202, response_model=JobOut, responses={403: {"model": Problem},
                                                                         404: {"model": Problem}})
def submit_job(body: JobIn, request: Request, caller: Caller, db: DB, service: Service) -> Job:
    """Queue a reconstruction of a dataset; the recipe is checked now, the work runs on the Dask cluster."""
    from cloudmri_kernel.recon.recipe import parse_recipe

    require_scope(caller, "recon")
    dataset = fetch(db, Dataset, body.dataset_id, request)
    check_dataset(db, caller, dataset, "see")
    recipe = {}
    if body.recipe is not None:
        recipe = parse_recipe(body.recipe).model_dump(mode="json")
        if recipe.get("device") == "cuda" and not service.cuda_available():
            raise UsageError("the recipe asks for device cuda, but the service has no CUDA GPU: use cpu")
    job = Job(dataset_id=dataset.id, user=caller.user, recipe=recipe)
    db.add(job)
    db.commit()
    request.state.object_id = job.id
    request.app.state.jobs.submit(job.id)
    return job


def _visible_job(db, request, caller, job_id) -> Job:
    job = fetch(db, Job, job_id, request)
    if job.user != caller.user and not caller.has("admin"):
        raise Forbidden(f"job {job_id} belongs to another user", job.dataset_id)
    return job


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"model": Problem}})
def get_job(job_id: str, request: Request, caller: Caller, db: DB) -> Job:
    return _visible_job(db, request, caller, job_id)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(caller: Caller, db: DB,
              status: Annotated[str | None, Query(pattern="^(queued|running|done|failed|cancelled)$")] = None,
              dataset_id: Annotated[str | None, Query(max_length=32)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Job]:
    """The caller's jobs, newest first."""
    statement = select(Job).where(Job.user == caller.user).order_by(Job.created_at.desc()).limit(limit)
    if status is not None:
        statement = statement.where(Job.status == status)
    if dataset_id is not None:
        statement = statement.where(Job.dataset_id == dataset_id)
    return list(db.scalars(statement))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses={404: {"model": Problem}})
def cancel_job(job_id: str, request: Request, caller: Caller, db: DB) -> Job:
    """Cancel a queued job at once, a running one after the image in flight; finished jobs stay as they are."""
    job = _visible_job(db, request, caller, job_id)
    if job.status in ("queued", "running"):
        request.app.state.jobs.cancel(job.id)
        if job.status == "queued":
            job.status = "cancelled"
    return job
