"""Grants: an admin of a dataset's site lets a user or another site read it, until a date; revocable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import or_, select

from cloudmri_kernel.catalog.models import Dataset, Grant, Site, utcnow
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service.deps import DB, Caller, fetch
from cloudmri_kernel.service.policy import require_site_admin
from cloudmri_kernel.service.routes.series import ERRORS
from cloudmri_kernel.service.schemas import GrantIn, GrantOut

router = APIRouter(tags=["grants"])


@router.post("/grants", status_code=201, response_model=GrantOut, responses=ERRORS)
def create_grant(body: GrantIn, request: Request, caller: Caller, db: DB) -> Grant:
    dataset = fetch(db, Dataset, body.dataset_id, request)
    require_site_admin(caller, dataset)
    if (body.user is None) == (body.site is None):
        raise UsageError("name exactly one grantee: a user or a site")
    if body.expires_at.tzinfo is None:
        raise UsageError("expires_at needs a time zone, e.g. 2027-01-31T00:00:00Z")
    if body.expires_at <= utcnow():
        raise UsageError("expires_at is in the past")
    if body.site is not None and db.get(Site, body.site) is None:
        raise UsageError(f"there is no site '{body.site}'")
    grant = Grant(dataset_id=dataset.id, grantee_user=body.user, grantee_site=body.site, scope=body.scope,
                  granted_by=caller.user, reason=body.reason, expires_at=body.expires_at)
    db.add(grant)
    db.flush()
    request.state.object_id = grant.id
    return grant


@router.get("/grants", response_model=list[GrantOut])
def list_grants(caller: Caller, db: DB,
                dataset_id: Annotated[str | None, Query(max_length=32)] = None,
                active: bool = True) -> list[Grant]:
    """Grants made to the caller (or their site) and, for admins, grants on their site's datasets."""
    mine = Grant.grantee_user == caller.user
    if caller.site is not None:
        mine = or_(mine, Grant.grantee_site == caller.site)
        if caller.has("admin"):
            mine = or_(mine, Grant.dataset_id.in_(select(Dataset.id).where(Dataset.site == caller.site)))
    statement = select(Grant).where(mine).order_by(Grant.created_at.desc())
    if dataset_id is not None:
        statement = statement.where(Grant.dataset_id == dataset_id)
    if active:
        statement = statement.where(Grant.revoked_at.is_(None), Grant.expires_at > utcnow())
    return list(db.scalars(statement))


@router.delete("/grants/{grant_id}", response_model=GrantOut, responses=ERRORS)
def revoke_grant(grant_id: str, request: Request, caller: Caller, db: DB) -> Grant:
    """Revoke at once; the grant stays in the record."""
    grant = fetch(db, Grant, grant_id, request)
    require_site_admin(caller, db.get(Dataset, grant.dataset_id))
    if grant.revoked_at is None:
        grant.revoked_at, grant.revoked_by = utcnow(), caller.user
    return grant
