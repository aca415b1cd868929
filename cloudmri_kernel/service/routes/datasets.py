"""Datasets: search, metadata and raw download (``read-raw``, and a grant for another site's data)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import or_, select

from cloudmri_kernel.catalog.models import Dataset, Series, Subject
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch, prefetched
from cloudmri_kernel.service.policy import (
    active_grants,
    audit_chain_listed,
    chain_listing,
    check_dataset,
    require_scope,
)
from cloudmri_kernel.service.schemas import DatasetOut, Problem, SeriesOut
from cloudmri_kernel.service.serialize import dataset_out

router = APIRouter(tags=["datasets"])
SEE = ("read-images", "read-raw", "upload", "report", "admin")
CHAIN_HEADER = "X-CloudMRI-Chain-Grants"
LISTING_HEADERS = {CHAIN_HEADER: {
    "description": "With a ledger: `ok` when datasets granted on chain are included, `unavailable` when the "
                   "ledger node does not answer (the listing then holds the caller's site's and catalog-granted "
                   "datasets only). Absent without a ledger.",
    "schema": {"type": "string", "enum": ["ok", "unavailable"]}}}


@router.get("/datasets", response_model=list[DatasetOut], responses={200: {"headers": LISTING_HEADERS}})
def list_datasets(
    request: Request, response: Response, caller: Caller, db: DB,
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
    """Datasets the caller may see, newest first: their site's, and others' they hold a grant for in the catalog
    or (with a ledger) on chain; each row's ``access`` says which. The header ``X-CloudMRI-Chain-Grants`` says
    whether the chain's grants are included (``ok``) or the node did not answer (``unavailable``)."""
    require_scope(caller, *SEE)
    granted = {g.dataset_id for g in active_grants(db, caller)}
    chain = chain_listing(db, caller)
    if chain.state != "off":
        response.headers[CHAIN_HEADER] = chain.state
    visible = []
    if caller.site is not None:
        visible.append(Dataset.site == caller.site)
    if granted:
        visible.append(Dataset.id.in_(granted))
    if chain.reasons:
        visible.append(Dataset.sha256.in_(chain.reasons))
    if not visible:
        return []
    statement = select(Dataset).where(or_(*visible)).order_by(Dataset.created_at.desc(), Dataset.id)
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
    rows = []
    for dataset in db.scalars(statement.limit(limit).offset(offset)):
        row = dataset_out(db, dataset)
        row.access = ("site" if dataset.site == caller.site else "grant" if dataset.id in granted
                      else "chain grant")
        rows.append((dataset, row))
    audit_chain_listed(db, caller, [d for d, row in rows if row.access == "chain grant"], chain)
    counts = Counter(row.access for _, row in rows)
    request.state.audit_reason = (", ".join(f"{counts[a]} by {a}" for a in ("site", "grant", "chain grant")
                                            if counts[a]) or "none") + (
        f"; {chain.problem}: datasets granted on chain are not listed" if chain.state == "unavailable" else "")
    return [row for _, row in rows]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses={403: {"model": Problem},
                                                                          404: {"model": Problem}})
def get_dataset(dataset_id: str, request: Request, caller: Caller, db: DB) -> DatasetOut:
    dataset = fetch(db, Dataset, dataset_id, request)
    access = check_dataset(db, caller, dataset, "see")
    return dataset_out(db, dataset).model_copy(update={"access": access})


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
