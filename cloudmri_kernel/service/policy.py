"""Access decisions on datasets: a site's data, the caller's scopes, and explicit grants across sites.

Rules (the trust model of the architecture document):

- Data belongs to a site. A caller sees their own site's data as far as their scopes allow.
- Another site's data needs an active grant (not expired, not revoked) for the caller or for the caller's site.
- Raw k-space needs ``read-raw``: the scope for the caller's own site, or a grant of ``read-raw`` made out to the
  caller by name (which is how a radiologist, who holds only ``read-images``, is let see raw data).
- Images need ``read-images`` (a ``read-raw`` grant includes images).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloudmri_kernel.catalog.models import Dataset, Grant, utcnow
from cloudmri_kernel.service.identity import Identity


class Forbidden(Exception):
    """The caller is known but may not do this: the answer is 403, and an audit event."""

    def __init__(self, reason: str, dataset_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.dataset_id = dataset_id


def require_scope(identity: Identity, *scopes: str) -> None:
    """The caller must hold at least one of ``scopes``."""
    if not any(identity.has(scope) for scope in scopes):
        names = " or ".join(f"custom:cloudmri:{scope}" for scope in scopes)
        raise Forbidden(f"this needs the scope {names}, which {identity.user}'s token does not carry")


def active_grants(session: Session, identity: Identity, dataset_ids: list[str] | None = None,
                  now: datetime | None = None) -> list[Grant]:
    """Grants in force for the caller (by name or by site), optionally limited to some datasets."""
    now = now or utcnow()
    grantee = Grant.grantee_user == identity.user
    if identity.site is not None:
        grantee = or_(grantee, Grant.grantee_site == identity.site)
    statement = select(Grant).where(grantee, Grant.revoked_at.is_(None), Grant.expires_at > now)
    if dataset_ids is not None:
        statement = statement.where(Grant.dataset_id.in_(dataset_ids))
    return list(session.scalars(statement))


def _grants_allow(grants: list[Grant], identity: Identity, need: str) -> bool:
    for grant in grants:
        if need == "read-raw":
            if grant.scope == "read-raw" and (grant.grantee_user == identity.user or identity.has("read-raw")):
                return True
        elif need == "read-images" and identity.has("read-images"):
            return True
        elif need == "see" and any(identity.has(s) for s in ("read-images", "read-raw", "upload", "report")):
            return True
    return False


def check_dataset(session: Session, identity: Identity, dataset: Dataset, need: str) -> str:
    """Allow or raise :class:`Forbidden`. ``need`` is ``see`` (metadata), ``read-images`` or ``read-raw``.

    Returns:
        How access was allowed: ``"site"`` or ``"grant"``.
    """
    own = identity.site is not None and dataset.site == identity.site
    if own:
        if need == "see" and any(identity.has(s) for s in ("read-images", "read-raw", "upload", "report",
                                                             "admin")):
            return "site"
        if need != "see" and identity.has(need):
            return "site"
    grants = active_grants(session, identity, [dataset.id])
    if _grants_allow(grants, identity, need):
        return "grant"
    if need == "read-raw" and own:
        raise Forbidden(f"{identity.user} may not read raw k-space (needs custom:cloudmri:read-raw or a "
                        "read-raw grant)", dataset.id)
    if own:
        raise Forbidden(f"{identity.user} lacks the scope for '{need}' on this dataset", dataset.id)
    raise Forbidden(f"dataset {dataset.id} belongs to site {dataset.site}; {identity.user} has no grant for "
                    f"'{need}' on it", dataset.id)


def require_site_admin(identity: Identity, dataset: Dataset) -> None:
    """Only an admin of the dataset's own site may grant access to it or assign it."""
    require_scope(identity, "admin")
    if identity.site != dataset.site:
        raise Forbidden(f"only an admin of site {dataset.site} may do this", dataset.id)
