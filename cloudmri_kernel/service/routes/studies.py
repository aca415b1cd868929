"""Blinded reader studies: set one up, read and score its cases blind, and see the statistics.

Who may do what (least privilege):

- Create a study: ``custom:cloudmri:recon`` (a researcher comparing reconstructions) or ``admin``, and the creator
  must be able to see the images of every series in it (``read-images`` on its dataset, by site or by grant).
- Read and score: only the study's own readers, each only their own cases. A reader never learns a series ID,
  a dataset ID or a method: cases are known by opaque codes (:func:`~cloudmri_kernel.quality.reader_study.blind_order`)
  and their images are served through the case, never through ``/series``. Seeing an image still needs
  ``read-images`` on its dataset; scoring needs ``label``.
- Results (method names, means with confidence intervals, inter-reader kappa): the creator, or an admin of the
  study's site.

Re-scoring is optimistic: a save names the ``version`` it started from and is refused (409, with the stored version
and scores) when another tab or device saved in between, so nothing is silently overwritten.
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import Field, StrictInt
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from cloudmri_kernel.catalog.models import Dataset, ReaderStudy, ReaderStudyCase, Series, utcnow
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.quality.reader_study import (
    CRITERIA,
    Rating,
    agreement,
    alpha_by_criterion,
    blind_order,
    method_summary,
)
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch
from cloudmri_kernel.service.identity import Identity
from cloudmri_kernel.service.images import npy_bytes, png_bytes, select_image
from cloudmri_kernel.service.policy import Forbidden, check_dataset, require_scope
from cloudmri_kernel.service.routes.series import ERRORS, visible_series
from cloudmri_kernel.service.schemas import Out, Problem, Strict

router = APIRouter(tags=["reader studies"])
CONFLICT = {409: {"model": Problem}}
CaseCode = Annotated[str, Path(pattern=r"^C-[0-9a-f]{12}$")]
Criterion = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Likert = Annotated[StrictInt, Field(ge=1, le=5)]


class StudyIn(Strict):
    name: str = Field(min_length=1, max_length=255)
    series_ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(
        min_length=1, max_length=1000, description="The series to compare: several methods of the same datasets")
    readers: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(min_length=1, max_length=100)
    criteria: list[Criterion] = Field(default=list(CRITERIA), min_length=1, max_length=16,
                                      description="Each scored 1-5 (Likert)")


class StudyOut(Out):
    id: str
    name: str
    site: str | None
    created_by: str
    criteria: list[str]
    status: str
    created_at: datetime
    closed_at: datetime | None
    readers: list[str]
    series_count: int


class StudyListItem(Out):
    id: str
    name: str
    status: str
    criteria: list[str]
    role: Literal["creator", "reader", "creator and reader"]
    my_cases: int
    my_scored: int


class CaseOut(Out):
    """A case as its reader sees it: nothing here names the series, its dataset or its method."""

    code: str
    position: int
    images: int
    image_url: str = Field(description="The middle image, relative to the API root (/api/v1)")
    scores: dict[str, int]
    version: int
    scored_at: datetime | None


class ScoresIn(Strict):
    scores: dict[Criterion, Likert] = Field(description="Every criterion of the study, an integer 1-5")
    version: int = Field(ge=0, description="The version these scores replace (0 for a first score)")


class SummaryOut(Out):
    method: str
    criterion: str
    n_cases: int
    n_ratings: int
    mean: float
    low: float | None
    high: float | None


class PairOut(Out):
    reader_a: str
    reader_b: str
    criterion: str
    n: int
    kappa: float | None


class ProgressOut(Out):
    reader: str
    scored: int
    total: int


class ResultsOut(Out):
    study: StudyOut
    interval: str
    level: float
    summary: list[SummaryOut]
    kappa_weights: str
    agreement: list[PairOut]
    mean_kappa: dict[str, float | None]
    alpha: dict[str, float | None]
    progress: list[ProgressOut]


def _study_out(db: Session, study: ReaderStudy) -> StudyOut:
    readers = list(db.scalars(select(ReaderStudyCase.reader).where(ReaderStudyCase.study_id == study.id)
                              .distinct().order_by(ReaderStudyCase.reader)))
    series = db.scalar(select(func.count(func.distinct(ReaderStudyCase.series_id)))
                       .where(ReaderStudyCase.study_id == study.id))
    return StudyOut.model_validate({**{c.name: getattr(study, c.name) for c in ReaderStudy.__table__.columns},
                                    "readers": readers, "series_count": series})


def _image_count(series: Series) -> int:
    return max(1, math.prod(series.shape[:-2])) if len(series.shape) >= 2 else 1


def _case_out(case: ReaderStudyCase, series: Series) -> CaseOut:
    images = _image_count(series)
    return CaseOut(code=case.case_code, position=case.position, images=images,
                   image_url=f"/studies/{case.study_id}/cases/{case.case_code}/images/{images // 2}.png",
                   scores=case.scores, version=case.version, scored_at=case.scored_at)


def _may_see_results(caller: Identity, study: ReaderStudy) -> bool:
    return caller.user == study.created_by or (caller.has("admin") and caller.site == study.site)


def _my_case(db: Session, request: Request, caller: Identity, study_id: str, code: str) -> ReaderStudyCase:
    study = fetch(db, ReaderStudy, study_id, request)
    case = db.scalar(select(ReaderStudyCase).where(ReaderStudyCase.study_id == study.id,
                                                   ReaderStudyCase.reader == caller.user,
                                                   ReaderStudyCase.case_code == code))
    if case is None:
        raise HTTPException(404, f"study {study.id} has no case {code} for {caller.user}")
    return case


def _readable_series(db: Session, request: Request, caller: Identity, case: ReaderStudyCase) -> Series:
    """The case's series if the reader may see its images; a refusal names the case, not the dataset."""
    require_scope(caller, "read-images")
    series = db.get(Series, case.series_id)
    request.state.dataset_id = series.dataset_id  # for the audit log (admins only), never for the reader
    try:
        check_dataset(db, caller, db.get(Dataset, series.dataset_id), "read-images")
    except Forbidden as refused:
        raise Forbidden(f"{caller.user} may not see the images of case {case.case_code}: the study's creator must "
                        "arrange a read-images grant", refused.dataset_id) from None
    return series


@router.post("/studies", status_code=201, response_model=StudyOut, responses=ERRORS)
def create_study(body: StudyIn, request: Request, caller: Caller, db: DB) -> StudyOut:
    """Set up a blinded study: every reader gets every series, in a random order of their own, under opaque codes."""
    require_scope(caller, "recon", "admin")
    if len(set(body.criteria)) != len(body.criteria):
        raise UsageError(f"the criteria {body.criteria} name one twice")
    series = [visible_series(db, request, caller, series_id) for series_id in dict.fromkeys(body.series_ids)]
    request.state.dataset_id = None
    study = ReaderStudy(name=body.name, site=caller.site, created_by=caller.user, seed=secrets.token_hex(32),
                        criteria=body.criteria)
    db.add(study)
    db.flush()
    for reader in dict.fromkeys(body.readers):
        for case in blind_order([s.id for s in series], reader, study.seed):
            db.add(ReaderStudyCase(study_id=study.id, reader=reader, case_code=case.code, series_id=case.series_id,
                                   position=case.position))
    db.flush()
    request.state.object_id = study.id
    return _study_out(db, study)


@router.get("/studies", response_model=list[StudyListItem])
def list_studies(caller: Caller, db: DB) -> list[StudyListItem]:
    """The studies the caller created or reads, newest first, with how far the caller has scored."""
    mine = (select(ReaderStudyCase.study_id, func.count().label("cases"),
                   func.count(ReaderStudyCase.scored_at).label("scored"))
            .where(ReaderStudyCase.reader == caller.user).group_by(ReaderStudyCase.study_id).subquery())
    rows = db.execute(select(ReaderStudy, mine.c.cases, mine.c.scored)
                      .outerjoin(mine, mine.c.study_id == ReaderStudy.id)
                      .where(or_(ReaderStudy.created_by == caller.user, mine.c.cases.is_not(None)))
                      .order_by(ReaderStudy.created_at.desc()))
    items = []
    for study, cases, scored in rows:
        creator = study.created_by == caller.user
        role = "creator and reader" if creator and cases else "creator" if creator else "reader"
        items.append(StudyListItem(id=study.id, name=study.name, status=study.status, criteria=study.criteria,
                                   role=role, my_cases=cases or 0, my_scored=scored or 0))
    return items


@router.get("/studies/{study_id}", response_model=StudyOut, responses=ERRORS)
def get_study(study_id: str, request: Request, caller: Caller, db: DB) -> StudyOut:
    """The study's setup (readers, criteria, status): for its creator and its site's admins."""
    study = fetch(db, ReaderStudy, study_id, request)
    if not _may_see_results(caller, study):
        raise Forbidden(f"only the creator of study {study.id} or an admin of its site may see its setup")
    return _study_out(db, study)


@router.get("/studies/{study_id}/cases", response_model=list[CaseOut], responses=ERRORS)
def my_cases(study_id: str, request: Request, caller: Caller, db: DB) -> list[CaseOut]:
    """The caller's own cases in their blinded order: codes, image links, their scores and versions."""
    study = fetch(db, ReaderStudy, study_id, request)
    rows = db.execute(select(ReaderStudyCase, Series).join(Series, Series.id == ReaderStudyCase.series_id)
                      .where(ReaderStudyCase.study_id == study.id, ReaderStudyCase.reader == caller.user)
                      .order_by(ReaderStudyCase.position)).all()
    if not rows:
        raise Forbidden(f"{caller.user} is not a reader of study {study.id}")
    return [_case_out(case, series) for case, series in rows]


async def _case_volume(request: Request, caller: Identity, service, study_id: str, code: str):
    def load():
        with service.catalog.session() as db:
            db.info["service"] = service
            series = _readable_series(db, request, caller, _my_case(db, request, caller, study_id, code))
            return service.images.volume(service.store, series.site, series.sha256, service.work_dir)

    return await run_in_threadpool(load)


@router.get("/studies/{study_id}/cases/{code}/images/{index}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, 400: {"model": Problem}, **ERRORS})
async def case_image_png(study_id: str, code: CaseCode, index: int, request: Request, caller: Caller,
                         service: Service) -> Response:
    """One image of the caller's case as an 8-bit PNG (window 0 to the 99.5th percentile, the same for every
    method, so the window gives nothing away)."""
    volume = await _case_volume(request, caller, service, study_id, code)
    data = await run_in_threadpool(png_bytes, select_image(volume, index), None)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/studies/{study_id}/cases/{code}/array", response_class=Response,
            responses={200: {"content": {"application/x-npy": {}}}, **ERRORS})
async def case_image_array(study_id: str, code: CaseCode, request: Request, caller: Caller,
                           service: Service) -> Response:
    """The caller's case as magnitude images, a NumPy ``.npy`` float32 array (n, y, x), for the viewer widget."""
    volume = await _case_volume(request, caller, service, study_id, code)
    return Response(await run_in_threadpool(npy_bytes, volume), media_type="application/x-npy",
                    headers={"X-Array-Shape": ",".join(map(str, volume.shape))})


@router.put("/studies/{study_id}/cases/{code}/scores", response_model=CaseOut, responses={**ERRORS, **CONFLICT})
def score_case(study_id: str, code: CaseCode, body: ScoresIn, request: Request, caller: Caller,
               db: DB) -> CaseOut:
    """Save the caller's scores of one of their cases: every criterion, 1-5. ``version`` must be the case's
    current version (0 before the first save); otherwise the answer is 409 with what is stored now."""
    require_scope(caller, "label")
    case = _my_case(db, request, caller, study_id, code)
    study = db.get(ReaderStudy, case.study_id)
    if study.status != "open":
        raise HTTPException(409, f"study {study.id} is closed: its scores can no longer change")
    missing, unknown = set(study.criteria) - set(body.scores), set(body.scores) - set(study.criteria)
    if missing or unknown:
        raise UsageError(f"score every criterion of the study, {study.criteria}, and nothing else"
                         + (f"; missing {sorted(missing)}" if missing else "")
                         + (f"; not in this study {sorted(unknown)}" if unknown else ""))
    saved = db.execute(update(ReaderStudyCase)
                       .where(ReaderStudyCase.id == case.id, ReaderStudyCase.version == body.version)
                       .values(scores=dict(body.scores), version=body.version + 1, scored_at=utcnow())
                       .execution_options(synchronize_session=False))
    db.refresh(case)
    if saved.rowcount != 1:
        raise HTTPException(409, {"message": f"case {code} was saved elsewhere meanwhile (version {case.version}, "
                                  f"you started from {body.version}): reload it, check the scores, save again",
                                  "version": case.version, "scores": case.scores})
    return _case_out(case, db.get(Series, case.series_id))


@router.post("/studies/{study_id}/close", response_model=StudyOut, responses={**ERRORS, **CONFLICT})
def close_study(study_id: str, request: Request, caller: Caller, db: DB) -> StudyOut:
    """Freeze the scores (the creator or an admin of the study's site): results from now on are final."""
    study = fetch(db, ReaderStudy, study_id, request)
    if not _may_see_results(caller, study):
        raise Forbidden(f"only the creator of study {study.id} or an admin of its site may close it")
    if study.status == "closed":
        raise HTTPException(409, f"study {study.id} was closed at {study.closed_at.isoformat()}")
    study.status, study.closed_at = "closed", utcnow()
    db.flush()
    return _study_out(db, study)


@router.get("/studies/{study_id}/results", response_model=ResultsOut, responses=ERRORS)
def study_results(study_id: str, request: Request, caller: Caller, db: DB,
                  interval: Annotated[Literal["bootstrap", "t"], Query()] = "bootstrap",
                  weights: Annotated[Literal["quadratic", "linear"], Query()] = "quadratic") -> ResultsOut:
    """Unblinded results: per method and criterion the mean with a 95 % confidence interval over cases (percentile
    bootstrap, 10 000 resamples, or Student's t), weighted kappa for every reader pair, and each reader's progress.
    The creator of the study or an admin of its site only."""
    study = fetch(db, ReaderStudy, study_id, request)
    if not _may_see_results(caller, study):
        raise Forbidden(f"only the creator of study {study.id} or an admin of its site may see its results")
    rows = db.execute(select(ReaderStudyCase, Series.method, Series.dataset_id)
                      .join(Series, Series.id == ReaderStudyCase.series_id)
                      .where(ReaderStudyCase.study_id == study.id)).all()
    ratings = [Rating(case.reader, method, dataset_id, case.scores) for case, method, dataset_id in rows
               if case.version > 0]
    progress: dict[str, list[int]] = {}
    for case, _, _ in rows:
        counts = progress.setdefault(case.reader, [0, 0])
        counts[0] += case.version > 0
        counts[1] += 1
    pairs, means = agreement(ratings, study.criteria, weights)
    summary = method_summary(ratings, study.criteria, interval=interval, seed=int(study.seed[:8], 16))
    return ResultsOut(study=_study_out(db, study), interval=interval, level=0.95,
                      summary=[SummaryOut.model_validate(s) for s in summary], kappa_weights=weights,
                      agreement=[PairOut.model_validate(p) for p in pairs], mean_kappa=means,
                      alpha=alpha_by_criterion(ratings, study.criteria),
                      progress=[ProgressOut(reader=r, scored=s, total=t) for r, (s, t) in sorted(progress.items())])
