"""The reading workflow: labels and quality scores per reader, structured reports, the worklist.

Reports and label sets are saved optimistically: each has a ``version`` (1 when created, one more with every save
and at sign-off); a save or a sign-off that names the version it started from is refused with 409, and the
stored row in the answer, when the row has moved on meanwhile (another tab, a second script), so nothing is
overwritten silently. The check and the write are one ``UPDATE … WHERE version = …`` statement.

Each saved version of a label set and each signed report is hashed (:func:`label_sha256`, :func:`report_sha256`:
SHA-256 of canonical JSON) and, when the service has a ledger, queued for anchoring with its dataset, so
``GET /datasets/{id}/ledger-history`` proves what a reader drew and signed, and when.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from cloudmri_kernel.catalog.models import Assignment, Dataset, Label, QualityScore, Report, utcnow
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch
from cloudmri_kernel.service.policy import Forbidden, check_dataset, require_scope, require_site_admin
from cloudmri_kernel.service.routes.series import ERRORS, visible_series
from cloudmri_kernel.service.schemas import (
    AssignmentIn,
    AssignmentOut,
    AssignmentUpdate,
    LabelIn,
    LabelOut,
    ReassignIn,
    ReportIn,
    ReportOut,
    ReportUpdate,
    ScoreIn,
    ScoreOut,
    SignIn,
)

router = APIRouter(tags=["reading"])
LabelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
CONFLICT = {409: {"description": "Saved meanwhile: the detail names the stored version and holds the stored row"}}


def _conflict(what: str, started_from: int | None, stored, out) -> HTTPException:
    """409 with what is stored now, so the caller can show it beside their own text and decide."""
    return HTTPException(409, {"message": f"{what} was saved meanwhile (version {stored.version}, you started "
                                          f"from {started_from}): reload it, compare, and save again",
                               "version": stored.version, "stored": out.model_validate(stored).model_dump(mode="json")})


def _canonical_sha256(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def label_sha256(label: Label) -> str:
    """The hash of a saved label set (and anchored): canonical JSON of whose it is, where, and what it holds."""
    return _canonical_sha256({"series_id": label.series_id, "reader": label.reader, "name": label.name,
                              "version": label.version, "vocabulary": label.vocabulary, "rois": label.rois})


def _hashed(label: Label, dataset_id: str, service) -> Label:
    label.sha256 = label_sha256(label)
    if service.ledger is not None:
        service.ledger.queue_label(label, dataset_id)
    return label


@router.put("/series/{series_id}/labels/{name}", response_model=LabelOut, responses={**ERRORS, **CONFLICT})
def save_labels(series_id: str, name: LabelName, body: LabelIn, request: Request, caller: Caller,
                db: DB, service: Service) -> Label:
    """Create or replace the caller's own label set ``name`` on a series (other readers' sets are untouched).

    With ``version`` the save replaces exactly that version (0: creates the set) or is refused with 409.
    """
    require_scope(caller, "label")
    series = visible_series(db, request, caller, series_id)
    label = db.scalar(select(Label).where(Label.series_id == series.id, Label.reader == caller.user,
                                          Label.name == name))
    if label is None:
        if body.version not in (None, 0):
            raise HTTPException(409, {"message": f"label set '{name}' was deleted or never saved (you started from "
                                                 f"version {body.version})", "version": 0, "stored": None})
        label = Label(series_id=series.id, reader=caller.user, name=name, vocabulary=body.vocabulary,
                      rois=body.rois)
        try:
            with db.begin_nested():
                db.add(label)
        except IntegrityError:  # the same reader created it at the same moment elsewhere
            stored = db.scalar(select(Label).where(Label.series_id == series.id, Label.reader == caller.user,
                                                   Label.name == name))
            raise _conflict(f"label set '{name}'", body.version, stored, LabelOut) from None
        return _hashed(label, series.dataset_id, service)
    started_from = label.version if body.version is None else body.version
    saved = db.execute(update(Label).where(Label.id == label.id, Label.version == started_from)
                       .values(vocabulary=body.vocabulary, rois=body.rois, version=started_from + 1,
                               updated_at=utcnow())
                       .execution_options(synchronize_session=False))
    db.refresh(label)
    if saved.rowcount != 1:
        raise _conflict(f"label set '{name}'", started_from, label, LabelOut)
    return _hashed(label, series.dataset_id, service)


@router.get("/series/{series_id}/labels", response_model=list[LabelOut], responses=ERRORS)
def list_labels(series_id: str, request: Request, caller: Caller, db: DB,
                reader: Annotated[str | None, Query(max_length=255)] = None) -> list[Label]:
    series = visible_series(db, request, caller, series_id)
    statement = select(Label).where(Label.series_id == series.id).order_by(Label.reader, Label.name)
    if reader is not None:
        statement = statement.where(Label.reader == reader)
    return list(db.scalars(statement))


@router.post("/series/{series_id}/scores", status_code=201, response_model=ScoreOut, responses=ERRORS)
def add_score(series_id: str, body: ScoreIn, request: Request, caller: Caller, db: DB) -> QualityScore:
    """A reader's quality score (1-5) with optional per-criterion scores."""
    require_scope(caller, "label", "report")
    series = visible_series(db, request, caller, series_id)
    if any(not 1 <= v <= 5 for v in body.criteria.values()):
        raise UsageError("every criterion score must be between 1 and 5")
    score = QualityScore(series_id=series.id, reader=caller.user, score=body.score, criteria=body.criteria,
                         comment=body.comment)
    db.add(score)
    db.flush()
    return score


@router.get("/series/{series_id}/scores", response_model=list[ScoreOut], responses=ERRORS)
def list_scores(series_id: str, request: Request, caller: Caller, db: DB) -> list[QualityScore]:
    series = visible_series(db, request, caller, series_id)
    return list(db.scalars(select(QualityScore).where(QualityScore.series_id == series.id)
                           .order_by(QualityScore.created_at)))


@router.post("/datasets/{dataset_id}/reports", status_code=201, response_model=ReportOut, responses=ERRORS)
def create_report(dataset_id: str, body: ReportIn, request: Request, caller: Caller, db: DB) -> Report:
    require_scope(caller, "report")
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "read-images")
    report = Report(dataset_id=dataset.id, author=caller.user, **body.model_dump())
    db.add(report)
    db.flush()
    return report


@router.get("/datasets/{dataset_id}/reports", response_model=list[ReportOut], responses=ERRORS)
def list_reports(dataset_id: str, request: Request, caller: Caller, db: DB) -> list[Report]:
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "read-images")
    return list(db.scalars(select(Report).where(Report.dataset_id == dataset.id).order_by(Report.created_at)))


def _own_draft(db, request, caller, report_id) -> Report:
    require_scope(caller, "report")
    report = fetch(db, Report, report_id, request)
    if report.author != caller.user:
        raise Forbidden(f"report {report_id} belongs to {report.author}", report.dataset_id)
    if report.status == "signed":
        raise UsageError(f"report {report_id} is signed and locked")
    return report


def _save_report(db, report: Report, started_from: int | None, **values) -> Report:
    """One statement checks the version and writes (a draft only); 409 with the stored report otherwise."""
    started_from = report.version if started_from is None else started_from
    saved = db.execute(update(Report).where(Report.id == report.id, Report.status == "draft",
                                            Report.version == started_from)
                       .values(version=started_from + 1, updated_at=utcnow(), **values)
                       .execution_options(synchronize_session=False))
    db.refresh(report)
    if saved.rowcount != 1:
        if report.status == "signed":
            raise UsageError(f"report {report.id} is signed and locked")
        raise _conflict(f"report {report.id}", started_from, report, ReportOut)
    return report


@router.put("/reports/{report_id}", response_model=ReportOut, responses={**ERRORS, **CONFLICT})
def update_report(report_id: str, body: ReportUpdate, request: Request, caller: Caller, db: DB) -> Report:
    """Edit the caller's draft; with ``version``, only that version (409 with the stored report otherwise)."""
    report = _own_draft(db, request, caller, report_id)
    return _save_report(db, report, body.version, **body.model_dump(exclude={"version"}))


def report_sha256(report: Report) -> str:
    """The hash recorded at sign-off (and anchored): canonical JSON of what the report says."""
    return _canonical_sha256({"dataset_id": report.dataset_id, "author": report.author, "template": report.template,
                              "findings": report.findings, "impression": report.impression,
                              "signed_at": report.signed_at.isoformat()})


@router.post("/reports/{report_id}/sign", response_model=ReportOut, responses={**ERRORS, **CONFLICT})
def sign_report(report_id: str, request: Request, caller: Caller, db: DB, service: Service,
                body: SignIn | None = None) -> Report:
    """Sign off: the report is locked and the SHA-256 of its content recorded. With ``version``, only the
    version the signer read is signed (409 if it changed meanwhile)."""
    report = _own_draft(db, request, caller, report_id)
    if not report.impression.strip():
        raise UsageError("a report needs an impression before it can be signed")
    signed_at = utcnow()
    report = _save_report(db, report, body.version if body else None, status="signed", signed_at=signed_at)
    report.sha256 = report_sha256(report)
    if service.ledger is not None:
        service.ledger.queue_report(report)
    return report


@router.post("/assignments", status_code=201, response_model=AssignmentOut, responses=ERRORS)
def assign(body: AssignmentIn, request: Request, caller: Caller, db: DB) -> Assignment:
    """Put a dataset on a reader's worklist (an admin of the dataset's site)."""
    dataset = fetch(db, Dataset, body.dataset_id, request)
    require_site_admin(caller, dataset)
    assignment = Assignment(dataset_id=dataset.id, reader=body.reader, assigned_by=caller.user,
                            priority=body.priority)
    db.add(assignment)
    db.flush()
    return assignment


@router.get("/worklist", response_model=list[AssignmentOut])
def worklist(caller: Caller, db: DB,
             status: Annotated[str | None, Query(pattern="^(assigned|in_progress|done|sent_back)$")] = None,
             min_priority: Annotated[int, Query(ge=0, le=10)] = 0) -> list[Assignment]:
    """The caller's assignments, highest priority first, then oldest."""
    statement = (select(Assignment).where(Assignment.reader == caller.user, Assignment.priority >= min_priority)
                 .order_by(Assignment.priority.desc(), Assignment.created_at))
    if status is not None:
        statement = statement.where(Assignment.status == status)
    return list(db.scalars(statement))


@router.patch("/assignments/{assignment_id}", response_model=AssignmentOut, responses=ERRORS)
def update_assignment(assignment_id: str, body: AssignmentUpdate, request: Request, caller: Caller,
                      db: DB) -> Assignment:
    """The reader moves an assignment on; sending it back needs a reason."""
    assignment = fetch(db, Assignment, assignment_id, request)
    if assignment.reader != caller.user:
        raise Forbidden(f"assignment {assignment_id} is {assignment.reader}'s", assignment.dataset_id)
    if body.status == "sent_back" and not body.reason.strip():
        raise UsageError("sending a study back needs a reason")
    assignment.status, assignment.reason, assignment.updated_at = body.status, body.reason, utcnow()
    return assignment


@router.post("/assignments/{assignment_id}/reassign", response_model=AssignmentOut, responses=ERRORS)
def reassign(assignment_id: str, body: ReassignIn, request: Request, caller: Caller, db: DB) -> Assignment:
    """Give a study to another reader (an admin of the dataset's site): it is theirs, back to ``assigned``.

    The previous reader's drafts and labels stay theirs; their next save through the worklist is refused with a
    message that the study was reassigned.
    """
    assignment = fetch(db, Assignment, assignment_id, request)
    require_site_admin(caller, db.get(Dataset, assignment.dataset_id))
    if body.reader == assignment.reader:
        raise UsageError(f"assignment {assignment_id} is already {body.reader}'s")
    reason = body.reason.strip() or f"reassigned from {assignment.reader} by {caller.user}"
    assignment.reader, assignment.status, assignment.reason = body.reader, "assigned", reason
    assignment.assigned_by, assignment.updated_at = caller.user, utcnow()
    return assignment
