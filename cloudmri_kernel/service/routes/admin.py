"""Who am I, sites, and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from cloudmri_kernel.catalog.models import Site
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service.deps import DB, Caller, Service
from cloudmri_kernel.service.policy import Forbidden, require_scope
from cloudmri_kernel.service.schemas import AuditOut, SiteIn, SiteOut, WhoAmI

router = APIRouter(tags=["admin"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(user=caller.user, site=caller.site, scopes=sorted(caller.scopes))


@router.get("/sites", response_model=list[SiteOut])
def list_sites(caller: Caller, db: DB) -> list[Site]:
    return list(db.scalars(select(Site).order_by(Site.name)))


@router.post("/sites", status_code=201, response_model=SiteOut)
def create_site(body: SiteIn, caller: Caller, db: DB) -> Site:
    require_scope(caller, "admin")
    if db.get(Site, body.name) is not None:
        raise UsageError(f"site '{body.name}' exists")
    site = Site(name=body.name, display_name=body.display_name)
    db.add(site)
    db.flush()
    return site


@router.get("/audit", response_model=list[AuditOut])
def audit(caller: Caller, service: Service,
          user: Annotated[str | None, Query(max_length=255)] = None,
          action: Annotated[str | None, Query(max_length=64)] = None,
          outcome: Annotated[str | None, Query(pattern="^(success|failure)$")] = None,
          dataset_id: Annotated[str | None, Query(max_length=32)] = None,
          since: datetime | None = None,
          before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list:
    """Audit events of the admin's site, newest first: its users' requests, all requests on its datasets
    (refused attempts from other sites included), and unauthenticated ones."""
    require_scope(caller, "admin")
    if caller.site is None:
        raise Forbidden(f"{caller.user} belongs to no site, so has no site's audit log to read")
    if since is not None and since.tzinfo is None:
        raise UsageError("since needs a time zone, e.g. 2026-11-01T00:00:00Z")
    return service.audit.query(user=user, action=action, outcome=outcome, dataset_id=dataset_id, since=since,
                               limit=limit, before_id=before_id, site=caller.site)
