"""Datasets: search, metadata and raw download (``read-raw``, and a grant for another site's data)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import or_, select

from cloudmri_kernel.catalog.models import Dataset, Series, Subject
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch, prefetched
from cloudmri_kernel.service.policy import active_grants, check_dataset, require_scope
from cloudmri_kernel.service.schemas import DatasetOut, Problem, SeriesOut
from cloudmri_kernel.service.serialize import dataset_out

router = APIRouter(tags=["datasets"])
SEE = ("read-images", "read-raw", "upload", "report", "admin")


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(
    caller: Caller, db: DB,
    site: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=128, description="Subject pseudonym")] = None,
    acquired_from: datetime | None = None,
    acquired_to: datetime | None = None,
    sequence: Annotated[str | None, Query(max_length=64)] = None,
    field_strength_t: Annotated[float | None, Query(ge=0, le=20)] = None,
    text: Annotated[str | None, Query(max_length=255, description="Part of the file name or protocol")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[DatasetOut]:
    """Datasets the caller may see (their site's, and others' they hold a grant for), newest first."""
    require_scope(caller, *SEE)
    granted = [g.dataset_id for g in active_grants(db, caller)]
    visible = Dataset.id.in_(granted) if granted else None
    if caller.site is not None:
        visible = Dataset.site == caller.site if visible is None else or_(Dataset.site == caller.site, visible)
    if visible is None:
        return []
    statement = select(Dataset).where(visible).order_by(Dataset.created_at.desc(), Dataset.id)
    if site is not None:
        statement = statement.where(Dataset.site == site)
    if subject is not None:
        statement = statement.join(Subject, Subject.id == Dataset.subject_id).where(Subject.pseudonym == subject)
    if acquired_from is not None:
        statement = statement.where(Dataset.acquired_at >= acquired_from)
    if acquired_to is not None:
        statement = statement.where(Dataset.acquired_at <= acquired_to)
    if sequence is not None:
        statement = statement.where(Dataset.sequence == sequence)
    if field_strength_t is not None:
        statement = statement.where(Dataset.field_strength_t.between(field_strength_t - 0.05,
                                                                     field_strength_t + 0.05))
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(or_(Dataset.filename.ilike(pattern, escape="\\"),
                                        Dataset.protocol.ilike(pattern, escape="\\")))
    return [dataset_out(db, d) for d in db.scalars(statement.limit(limit).offset(offset))]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses={403: {"model": Problem},
                                                                          404: {"model": Problem}})
def get_dataset(dataset_id: str, request: Request, caller: Caller, db: DB) -> DatasetOut:
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "see")
    return dataset_out(db, dataset)


@router.get("/datasets/{dataset_id}/raw", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-hdf5": {}}}, 403: {"model": Problem},
                       404: {"model": Problem}})
def download_raw(dataset_id: str, request: Request, caller: Caller, db: DB, service: Service):
    """The raw MRD file, decrypted and checked against its SHA-256 while it streams."""
    dataset = fetch(db, Dataset, dataset_id, request)
    request.state.audit_reason = "via " + check_dataset(db, caller, dataset, "read-raw")
    chunks = prefetched(service.store.open(dataset.site, dataset.sha256))
    return StreamingResponse(chunks, media_type="application/x-hdf5", headers={
        "Content-Length": str(dataset.size), "ETag": f'"{dataset.sha256}"',
        "X-Content-SHA256": dataset.sha256,
        "Content-Disposition": f'attachment; filename="{dataset.id}.h5"'})


@router.get("/datasets/{dataset_id}/series", response_model=list[SeriesOut])
def list_series(dataset_id: str, request: Request, caller: Caller, db: DB) -> list[Series]:
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "read-images")
    return list(db.scalars(select(Series).where(Series.dataset_id == dataset.id).order_by(Series.created_at)))
