"""The API's request and response bodies (they make the published OpenAPI spec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SHA256 = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the content, 64 lowercase hex digits")
SITE = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="A site name")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class WhoAmI(Out):
    user: str
    site: str | None
    scopes: list[str]


class SiteIn(Strict):
    name: str = SITE
    display_name: str = Field(default="", max_length=255)


class SiteOut(Out):
    name: str
    display_name: str
    created_at: datetime


class UploadIn(Strict):
    filename: str = Field(min_length=1, max_length=255, description="Original file name (for people only)")
    size: int = Field(ge=1, le=1 << 44, description="Total size in bytes")
    sha256: str = SHA256
    deidentified_with: str | None = Field(default=None, max_length=64,
                                          description="The de-identification policy the client applied")


class UploadOut(Out):
    id: str
    filename: str
    size: int
    sha256: str
    site: str
    status: str
    offset: int
    chunk_size: int
    dataset_id: str | None


class DatasetOut(Out):
    id: str
    site: str
    sha256: str
    size: int
    filename: str
    uploaded_by: str
    created_at: datetime
    acquired_at: datetime | None
    protocol: str | None
    sequence: str | None
    field_strength_t: float | None
    vendor: str | None
    subject: str | None = None
    summary: dict[str, Any]
    access: Literal["site", "grant", "chain grant"] | None = Field(
        default=None, description="How the caller may see it (in listings and GET /datasets/{id}): their own site's "
        "data, a grant in the catalog, or a grant on chain (AccessGrants) to an account of their site")


class JobIn(Strict):
    dataset_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    recipe: dict[str, Any] | None = Field(default=None, description="A reconstruction recipe; default from the "
                                          "raw header (see `cloudmri recon --help`)")


class JobOut(Out):
    id: str
    dataset_id: str
    user: str
    recipe: dict[str, Any]
    status: str
    progress: float
    error: str | None
    series_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SeriesOut(Out):
    id: str
    dataset_id: str
    site: str
    sha256: str
    size: int
    method: str
    recipe: dict[str, Any]
    code_version: str
    source_sha256: str
    shape: list[int]
    created_by: str
    created_at: datetime


class LabelIn(Strict):
    vocabulary: list[str] = Field(default_factory=list, max_length=256)
    rois: list[dict[str, Any]] = Field(default_factory=list, max_length=10000)
    version: int | None = Field(default=None, ge=0, description=(
        "The version of the caller's set this save replaces (0: the set must not exist yet); a stored set at "
        "another version is answered 409. Leave it out to replace whatever is stored."))


class LabelOut(Out):
    id: str
    series_id: str
    reader: str
    name: str
    vocabulary: list[str]
    rois: list[dict[str, Any]]
    mask_sha256: str | None
    sha256: str | None
    version: int
    updated_at: datetime


class ScoreIn(Strict):
    score: int = Field(ge=1, le=5)
    criteria: dict[str, int] = Field(default_factory=dict, max_length=32)
    comment: str = Field(default="", max_length=10000)


class ScoreOut(Out):
    id: str
    series_id: str
    reader: str
    score: int
    criteria: dict[str, Any]
    comment: str
    created_at: datetime


class ReportIn(Strict):
    template: str = Field(default="generic", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    findings: str = Field(default="", max_length=100000)
    impression: str = Field(default="", max_length=100000)


class ReportUpdate(ReportIn):
    version: int | None = Field(default=None, ge=1, description=(
        "The version this edit replaces; a report saved or signed since is answered 409 with what is stored. "
        "Leave it out to replace the draft whatever its version."))


class SignIn(Strict):
    version: int | None = Field(default=None, ge=1, description=(
        "The version the signer read; signing a report changed since is answered 409."))


class ReportOut(Out):
    id: str
    dataset_id: str
    author: str
    template: str
    findings: str
    impression: str
    status: str
    sha256: str | None
    signed_at: datetime | None
    version: int
    updated_at: datetime


class AssignmentIn(Strict):
    dataset_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    reader: str = Field(min_length=1, max_length=255)
    priority: int = Field(default=0, ge=0, le=10)


class AssignmentUpdate(Strict):
    status: Literal["in_progress", "done", "sent_back"]
    reason: str = Field(default="", max_length=10000)


class ReassignIn(Strict):
    reader: str = Field(min_length=1, max_length=255)
    reason: str = Field(default="", max_length=10000)


class AssignmentOut(Out):
    id: str
    dataset_id: str
    reader: str
    assigned_by: str
    priority: int
    status: str
    reason: str
    created_at: datetime
    updated_at: datetime


class GrantIn(Strict):
    dataset_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    user: str | None = Field(default=None, min_length=1, max_length=255, description="Grant to one user ...")
    site: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="... or a whole site")
    scope: Literal["read-raw", "read-images"]
    expires_at: datetime = Field(description="When the grant ends (timezone-aware, in the future)")
    reason: str = Field(default="", max_length=10000)


class GrantOut(Out):
    id: str
    dataset_id: str
    grantee_user: str | None
    grantee_site: str | None
    scope: str
    granted_by: str
    reason: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


class AuditOut(Out):
    id: int
    timestamp: datetime
    user: str | None
    site: str | None
    action: str
    category: str
    outcome: str
    source_ip: str | None
    http_method: str | None
    path: str | None
    status_code: int | None
    dataset_id: str | None
    object_id: str | None
    reason: str
    details: dict[str, Any]


class Problem(BaseModel):
    detail: Any
