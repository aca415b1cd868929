"""The catalog's data model (SQLAlchemy 2 declarative mapping).

One table per concept of the architecture's data model: Site, Subject (pseudonym only), Dataset (an MRD raw
file in the object store), Series (reconstructed images with the recipe that made them), Label, QualityScore,
Report, Assignment (worklist), Grant, AuditEvent, Experiment (federated run), Model (weights hash) and the blinded
ReaderStudy with its ReaderStudyCase rows, plus the service's own bookkeeping: Upload (a resumable upload in
progress) and Job (a reconstruction request).

Objects are referenced by the SHA-256 of their plaintext, which is also their address in the object store and
what the ledger anchors. Times are stored in UTC and returned timezone-aware on every database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone; PostgreSQL keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("catalog timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


SHA256 = String(64)
ID = String(32)
NAME = String(64)
USER = String(255)


class Site(Base):
    """A hospital or edge node; data belongs to exactly one site."""

    __tablename__ = "sites"
    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subject(Base):
    """A scanned person, known only by the site-keyed pseudonym made at ingest."""

    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("site", "pseudonym"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    site: Mapped[str] = mapped_column(ForeignKey("sites.name"))
    pseudonym: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    """One MRD raw file in the object store, with the header fields people search by."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("site", "sha256"),
        Index("ix_datasets_site_acquired", "site", "acquired_at"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    site: Mapped[str] = mapped_column(ForeignKey("sites.name"))
    subject_id: Mapped[str | None] = mapped_column(ForeignKey("subjects.id"))
    sha256: Mapped[str] = mapped_column(SHA256)
    size: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    uploaded_by: Mapped[str] = mapped_column(USER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acquired_at: Mapped[datetime | None]
    protocol: Mapped[str | None] = mapped_column(String(255))
    sequence: Mapped[str | None] = mapped_column(String(64), index=True)
    field_strength_t: Mapped[float | None] = mapped_column(Float, index=True)
    vendor: Mapped[str | None] = mapped_column(String(128))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Series(Base):
    """Reconstructed images of a dataset: an MRD image file in the store and the recipe that made it."""

    __tablename__ = "series"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    site: Mapped[str] = mapped_column(ForeignKey("sites.name"))
    sha256: Mapped[str] = mapped_column(SHA256)
    size: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(64))
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    code_version: Mapped[str] = mapped_column(String(64))
    source_sha256: Mapped[str] = mapped_column(SHA256)
    shape: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str] = mapped_column(USER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A reconstruction request: queued, running, done (with its series), failed or cancelled."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="status"),
        CheckConstraint("progress BETWEEN 0 AND 1", name="progress_range"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    user: Mapped[str] = mapped_column(USER)
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    series_id: Mapped[str | None] = mapped_column(ForeignKey("series.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Upload(Base):
    """A resumable upload: bytes received so far are staged by the service until the declared hash matches."""

    __tablename__ = "uploads"
    __table_args__ = (CheckConstraint("status IN ('open', 'complete', 'failed')", name="status"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    site: Mapped[str] = mapped_column(ForeignKey("sites.name"))
    user: Mapped[str] = mapped_column(USER)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(SHA256)
    anonymize: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="open")
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    error: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Label(Base):
    """One reader's label set on a series: ROIs as JSON, masks as a store object; readers never share a set.

    ``version`` starts at 1 and grows by one with every save; a save that names an older version is refused, so
    two tabs of one reader never overwrite each other silently. ``sha256`` hashes the saved content (see
    ``service.routes.reading.label_sha256``); each saved version is anchored on the ledger.
    """

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("series_id", "reader", "name"), CheckConstraint("version >= 1", name="version"))
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    series_id: Mapped[str] = mapped_column(ForeignKey("series.id"), index=True)
    reader: Mapped[str] = mapped_column(USER)
    name: Mapped[str] = mapped_column(String(128), default="default")
    vocabulary: Mapped[list[Any]] = mapped_column(default=list)
    rois: Mapped[list[Any]] = mapped_column(default=list)
    mask_sha256: Mapped[str | None] = mapped_column(SHA256)
    sha256: Mapped[str | None] = mapped_column(SHA256)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QualityScore(Base):
    """A reader's image-quality score of a series (e.g. a 1-5 Likert score per criterion)."""

    __tablename__ = "quality_scores"
    __table_args__ = (CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    series_id: Mapped[str] = mapped_column(ForeignKey("series.id"), index=True)
    reader: Mapped[str] = mapped_column(USER)
    score: Mapped[int] = mapped_column(Integer)
    criteria: Mapped[dict[str, Any]] = mapped_column(default=dict)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Report(Base):
    """A structured radiology report; signing locks it and records the SHA-256 of its content.

    ``version`` starts at 1 and grows by one with every save and at sign-off; an edit or a sign-off that names an
    older version is refused (optimistic concurrency: what was signed is what the signer last saw).
    """

    __tablename__ = "reports"
    __table_args__ = (CheckConstraint("status IN ('draft', 'signed')", name="status"),
                      CheckConstraint("version >= 1", name="version"))
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    author: Mapped[str] = mapped_column(USER)
    template: Mapped[str] = mapped_column(String(64), default="generic")
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft")
    sha256: Mapped[str | None] = mapped_column(SHA256)
    signed_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Assignment(Base):
    """A worklist entry: a dataset assigned to a reader, with priority and status."""

    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint("status IN ('assigned', 'in_progress', 'done', 'sent_back')", name="status"),
        Index("ix_assignments_reader_status", "reader", "status"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    reader: Mapped[str] = mapped_column(USER)
    assigned_by: Mapped[str] = mapped_column(USER)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="assigned")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Grant(Base):
    """An explicit, expiring permission on one dataset for a user or a whole site; revocable."""

    __tablename__ = "grants"
    __table_args__ = (
        CheckConstraint("(grantee_user IS NULL) <> (grantee_site IS NULL)", name="one_grantee"),
        CheckConstraint("scope IN ('read-raw', 'read-images')", name="scope"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    grantee_user: Mapped[str | None] = mapped_column(USER)
    grantee_site: Mapped[str | None] = mapped_column(ForeignKey("sites.name"))
    scope: Mapped[str] = mapped_column(String(32))
    granted_by: Mapped[str] = mapped_column(USER)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(USER)


class AuditEvent(Base):
    """An append-only record of one access decision or change (database triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_user_time", "user", "timestamp"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user: Mapped[str | None] = mapped_column(USER)
    site: Mapped[str | None] = mapped_column(NAME, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    category: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    http_method: Mapped[str | None] = mapped_column(String(8))
    path: Mapped[str | None] = mapped_column(String(1024))
    status_code: Mapped[int | None] = mapped_column(Integer)
    dataset_id: Mapped[str | None] = mapped_column(ID, index=True)
    object_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Experiment(Base):
    """A federated-learning run: its configuration, the sites that took part and per-round metrics."""

    __tablename__ = "experiments"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="created")
    sites: Mapped[list[Any]] = mapped_column(default=list)
    metrics: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str] = mapped_column(USER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    """Trained network weights, known by their hash (anchored on the ledger when one is configured)."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    site: Mapped[str | None] = mapped_column(ForeignKey("sites.name"))
    experiment_id: Mapped[str | None] = mapped_column(ForeignKey("experiments.id"))
    round: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReaderStudy(Base):
    """A blinded reader study: series of several reconstruction methods scored 1-5 per criterion by its readers.

    ``seed`` is the study's secret: with the reader's name it fixes each reader's case order and opaque case codes
    (:func:`cloudmri_kernel.quality.reader_study.blind_order`); it never leaves the service.
    """

    __tablename__ = "reader_studies"
    __table_args__ = (CheckConstraint("status IN ('open', 'closed')", name="status"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    site: Mapped[str | None] = mapped_column(ForeignKey("sites.name"))
    created_by: Mapped[str] = mapped_column(USER, index=True)
    seed: Mapped[str] = mapped_column(String(64))
    criteria: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]


class ReaderStudyCase(Base):
    """One series as one reader of a study meets it (code and position), and that reader's scores of it.

    Scores live here rather than in ``quality_scores``: a study needs exactly one current answer per reader and
    case with a ``version`` for optimistic concurrency (two tabs must not silently overwrite each other), and a
    study's blinded scores must not appear in a series' open score list, where other readers of the same study
    could see them. ``version`` is 0 until the first score and grows by one with every save.
    """

    __tablename__ = "reader_study_cases"
    __table_args__ = (
        UniqueConstraint("study_id", "reader", "case_code"),
        UniqueConstraint("study_id", "reader", "series_id"),
        UniqueConstraint("study_id", "reader", "position"),
        CheckConstraint("version >= 0", name="version"),
    )
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(ForeignKey("reader_studies.id"), index=True)
    reader: Mapped[str] = mapped_column(USER)
    case_code: Mapped[str] = mapped_column(String(32))
    series_id: Mapped[str] = mapped_column(ForeignKey("series.id"))
    position: Mapped[int] = mapped_column(Integer)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    scored_at: Mapped[datetime | None]
