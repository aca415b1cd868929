"""Resumable uploads of raw data: declare (size, SHA-256), send chunks at offsets, complete.

Protocol (in the spirit of the tus resumable-upload protocol): ``POST /uploads`` declares the file and returns
its ID and chunk size; ``PUT /uploads/{id}/chunks?offset=N`` appends one chunk at ``N`` (409 with the right
offset if ``N`` is not where the staged bytes end); ``GET /uploads/{id}`` tells the acknowledged offset to
resume from; ``POST /uploads/{id}/complete`` checks the SHA-256, validates the MRD file and only then stores it
encrypted and registers the dataset.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cloudmri_kernel.catalog.models import Dataset, Site, Subject, Upload
from cloudmri_kernel.digest import file_sha256
from cloudmri_kernel.errors import CloudMRIError, UsageError
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch
from cloudmri_kernel.service.policy import Forbidden, require_scope
from cloudmri_kernel.service.schemas import DatasetOut, Problem, UploadIn, UploadOut
from cloudmri_kernel.service.serialize import dataset_out

router = APIRouter(tags=["uploads"])


class RequestTooLarge(Exception):
    pass


def _out(upload: Upload, service) -> UploadOut:
    offset = upload.size if upload.status == "complete" else service.staging.offset(upload.id)
    return UploadOut(id=upload.id, filename=upload.filename, size=upload.size, sha256=upload.sha256,
                     site=upload.site, status=upload.status, offset=offset, chunk_size=service.max_chunk_bytes,
                     dataset_id=upload.dataset_id)


def _own_upload(db, request, caller, upload_id) -> Upload:
    upload = fetch(db, Upload, upload_id, request)
    if upload.user != caller.user:
        raise Forbidden(f"upload {upload_id} belongs to another user")
    return upload


@router.post("/uploads", status_code=201, response_model=UploadOut, responses={403: {"model": Problem}})
def create_upload(body: UploadIn, caller: Caller, db: DB, service: Service) -> UploadOut:
    """Declare an upload to the caller's site."""
    require_scope(caller, "upload")
    if caller.site is None:
        raise Forbidden(f"{caller.user} belongs to no site, so cannot upload")
    if db.get(Site, caller.site) is None:
        db.add(Site(name=caller.site))
    upload = Upload(site=caller.site, user=caller.user, filename=body.filename, size=body.size,
                    sha256=body.sha256, anonymize=body.deidentified_with)
    db.add(upload)
    db.flush()
    return _out(upload, service)


@router.get("/uploads/{upload_id}", response_model=UploadOut, responses={404: {"model": Problem}})
def get_upload(upload_id: str, request: Request, caller: Caller, db: DB, service: Service) -> UploadOut:
    """The upload's state; ``offset`` is where to resume."""
    return _out(_own_upload(db, request, caller, upload_id), service)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"a chunk may have at most {limit} bytes")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise RequestTooLarge(f"a chunk may have at most {limit} bytes")
        parts.append(part)
    return b"".join(parts)


@router.put("/uploads/{upload_id}/chunks", response_model=UploadOut,
            responses={409: {"model": Problem}, 413: {"model": Problem}},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_chunk(upload_id: str, request: Request, caller: Caller, service: Service,
                    offset: Annotated[int, Query(ge=0)]) -> UploadOut:
    """Append the request body at ``offset``; answered once the bytes are on disk."""
    data = await _read_body(request, service.max_chunk_bytes)

    def append() -> UploadOut:
        with service.catalog.session() as db:
            upload = _own_upload(db, request, caller, upload_id)
            if upload.status != "open":
                raise UsageError(f"upload {upload_id} is {upload.status}")
            if not data:
                raise UsageError("the chunk is empty")
            service.staging.append(upload_id, offset, data, upload.size)
            return _out(upload, service)

    return await run_in_threadpool(append)


@router.delete("/uploads/{upload_id}", status_code=204)
def abort_upload(upload_id: str, request: Request, caller: Caller, db: DB, service: Service) -> None:
    """Give up an upload and delete its staged bytes."""
    upload = _own_upload(db, request, caller, upload_id)
    if upload.status == "open":
        upload.status = "failed"
        upload.error = {"detail": "aborted by the client"}
    service.staging.discard(upload_id)


def _fail(db, service, upload: Upload, status: int, detail) -> JSONResponse:
    upload.status, upload.error = "failed", {"detail": detail}
    service.staging.discard(upload.id)
    return JSONResponse({"detail": detail}, status_code=status)


def _catalog_fields(path) -> dict:
    from cloudmri_kernel.mrd.info import summarize
    from cloudmri_kernel.mrd.reader import MRDFile

    with MRDFile(path) as mrd:
        summary = summarize(mrd).to_dict()
        header = mrd.header
    study = header.studyInformation
    acquired = None
    if study is not None and study.studyDate is not None:
        from datetime import UTC, datetime, time

        day = study.studyDate.to_date()
        clock = study.studyTime.to_time() if study.studyTime is not None else time()
        acquired = datetime.combine(day, clock.replace(tzinfo=None)).replace(tzinfo=UTC)
    subject = header.subjectInformation.patientID if header.subjectInformation is not None else None
    sequence = header.sequenceParameters.sequence_type if header.sequenceParameters is not None else None
    if isinstance(sequence, list):
        sequence = sequence[0] if sequence else None
    summary.pop("path", None)
    return {"summary": summary, "acquired_at": acquired, "protocol": summary["protocol"],
            "sequence": sequence or summary["trajectory"], "field_strength_t": summary["field_strength_t"],
            "vendor": summary["vendor"], "subject": subject}


def _get_or_insert(db, query, make):
    """The row the query finds, or a new one; when a concurrent request inserts the same row first (two users
    completing the same file at once), the unique constraint stops the second insert and its row is used."""
    row = db.scalar(query)
    if row is not None:
        return row
    try:
        with db.begin_nested():
            row = make()
            db.add(row)
    except IntegrityError:
        row = db.scalar(query)
        if row is None:
            raise
    return row


@router.post("/uploads/{upload_id}/complete", status_code=201, response_model=DatasetOut,
             responses={409: {"model": Problem}, 422: {"model": Problem}})
def complete_upload(upload_id: str, request: Request, caller: Caller, db: DB, service: Service):
    """Check the declared SHA-256 and the MRD file; store it encrypted and register the dataset."""
    from cloudmri_kernel.mrd.validate import validate_file

    upload = _own_upload(db, request, caller, upload_id)
    if upload.status == "complete":
        return dataset_out(db, fetch(db, Dataset, upload.dataset_id)).model_copy(update={"access": "site"})
    if upload.status != "open":
        raise UsageError(f"upload {upload_id} is {upload.status}: start a new upload")
    staged, received = service.staging.path(upload_id), service.staging.offset(upload_id)
    if received != upload.size:
        return JSONResponse({"detail": f"only {received} of {upload.size} bytes have arrived",
                             "offset": received}, status_code=409)
    actual = file_sha256(staged)
    if actual != upload.sha256:
        request.state.audit_reason = "hash mismatch"
        return _fail(db, service, upload, 422, f"the bytes received have SHA-256 {actual}, but {upload.sha256} "
                     "was declared: nothing was stored")
    findings = [f.to_dict() for f in validate_file(staged)]
    if any(f["severity"] == "error" for f in findings):
        request.state.audit_reason = "invalid MRD"
        return _fail(db, service, upload, 422, {"message": "the file is not valid MRD: nothing was stored",
                                               "findings": findings})
    try:
        fields = _catalog_fields(staged)
    except CloudMRIError as exc:
        return _fail(db, service, upload, 422, {"message": str(exc), "findings": findings})
    stored = service.store.put(staged, upload.site, expected_sha256=upload.sha256)
    subject = None
    if fields["subject"]:
        subject = _get_or_insert(db, select(Subject).where(Subject.site == upload.site,
                                                           Subject.pseudonym == fields["subject"]),
                                 lambda: Subject(site=upload.site, pseudonym=fields["subject"]))
    dataset = _get_or_insert(
        db, select(Dataset).where(Dataset.site == upload.site, Dataset.sha256 == stored.sha256),
        lambda: Dataset(site=upload.site, subject_id=subject.id if subject else None, sha256=stored.sha256,
                        size=stored.size, filename=upload.filename, uploaded_by=caller.user,
                        **{k: v for k, v in fields.items() if k != "subject"}))
    upload.status, upload.dataset_id = "complete", dataset.id
    request.state.dataset_id = dataset.id
    if service.ledger is not None:  # queued before the commit: a dataset in the catalog is never left unanchored
        service.ledger.queue_dataset(dataset)
    db.commit()
    service.staging.discard(upload_id)
    return dataset_out(db, dataset).model_copy(update={"access": "site"})  # uploads go to the caller's site
