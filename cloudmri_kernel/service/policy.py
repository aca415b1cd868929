"""Access decisions on datasets: a site's data, the caller's scopes, and explicit grants across sites.

Rules (the trust model of the architecture document):

- Data belongs to a site. A caller sees their own site's data as far as their scopes allow.
- Another site's data needs an active grant (not expired, not revoked) for the caller or for the caller's site.
- Raw k-space needs ``read-raw``: the scope for the caller's own site, or a grant of ``read-raw`` made out to the
  caller by name (which is how a radiologist, who holds only ``read-images``, is let see raw data).
- Images need ``read-images`` (a ``read-raw`` grant includes images).
- With a ledger, a grant recorded on chain (``AccessGrants``) to an account registered for the caller's site counts
  like a catalog grant to that site (cached for ``CLOUDMRI_LEDGER_GRANT_CACHE_S``; the node down, access the chain
  would decide is refused). Every decision on another site's data is audited (``grant-decision``: allow or deny,
  and whether the catalog or the chain decided).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloudmri_kernel.catalog.models import Dataset, Grant, utcnow
from cloudmri_kernel.ledger.client import NodeUnavailable
from cloudmri_kernel.service.identity import Identity

log = logging.getLogger("cloudmri.service.policy")


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

    The service (its ledger and audit log) is found in ``session.info["service"]`` (set by
    :func:`cloudmri_kernel.service.deps.session`); without it, only the catalog decides and nothing is audited here.

    Returns:
        How access was allowed: ``"site"``, ``"grant"`` (catalog) or ``"chain grant"``.
    """
    own = identity.site is not None and dataset.site == identity.site
    if own:
        if need == "see" and any(identity.has(s) for s in ("read-images", "read-raw", "upload", "report",
                                                             "admin")):
            return "site"
        if need != "see" and identity.has(need):
            return "site"
    service = session.info.get("service")
    grants = active_grants(session, identity, [dataset.id])
    if _grants_allow(grants, identity, need):
        _audit_decision(service, identity, dataset, need, True, "catalog", "an active grant in the catalog")
        return "grant"
    ledger = getattr(service, "ledger", None)
    chain_note = ""
    if ledger is not None and not own and identity.site is not None:
        allowed, chain_note = _chain_allows(ledger, identity, dataset, need)
        if allowed:
            _audit_decision(service, identity, dataset, need, True, "chain", chain_note)
            return "chain grant"
    if need == "read-raw" and own:
        reason = (f"{identity.user} may not read raw k-space (needs custom:cloudmri:read-raw or a read-raw grant)")
    elif own:
        reason = f"{identity.user} lacks the scope for '{need}' on this dataset"
    else:
        reason = f"dataset {dataset.id} belongs to site {dataset.site}; {identity.user} has no grant for '{need}' on it"
    if chain_note:
        reason += f" ({chain_note})"
    _audit_decision(service, identity, dataset, need, False, "chain" if ledger is not None and not own else "catalog",
                    reason)
    raise Forbidden(reason, dataset.id)


_CHAIN_SCOPES = {"see": ("read-images", "read-raw"), "read-images": ("read-images", "read-raw"),
                 "read-raw": ("read-raw",)}


def _chain_allows(ledger, identity: Identity, dataset: Dataset, need: str) -> tuple[bool, str]:
    """Whether an on-chain grant to one of the caller's site's accounts covers ``need``, and why (for the audit).
    As with catalog grants to a site, the caller must hold the matching scope themselves."""
    if need == "see":
        if not any(identity.has(s) for s in ("read-images", "read-raw", "upload", "report")):
            return False, "the caller holds no scope to see data"
    elif not identity.has(need):
        return False, f"the caller lacks custom:cloudmri:{need}, which a site grant does not give"
    try:
        found = ledger.grants.granted_scopes(dataset.sha256, identity.site, _CHAIN_SCOPES[need])
    except NodeUnavailable:
        log.warning("ledger node down: on-chain grants for %s cannot be checked; access refused", dataset.id)
        return False, "the ledger node does not answer, so on-chain grants cannot be checked"
    if found:
        account, scope = found[0]
        return True, f"on-chain grant of {scope} to {account} of site {identity.site}"
    return False, f"no on-chain grant for site {identity.site}"


def _audit_decision(service, identity: Identity, dataset: Dataset, need: str, allowed: bool, source: str,
                    reason: str) -> None:
    if service is None:
        return
    try:
        service.audit.record("grant-decision", "iam", "success" if allowed else "failure", identity.user,
                             site=identity.site, dataset_id=dataset.id, reason=reason,
                             details={"need": need, "decision": "allow" if allowed else "deny", "source": source,
                                      "dataset_site": dataset.site})
    except Exception:
        log.exception("could not audit the access decision on %s", dataset.id)


def require_site_admin(identity: Identity, dataset: Dataset) -> None:
    """Only an admin of the dataset's own site may grant access to it or assign it."""
    require_scope(identity, "admin")
    if identity.site != dataset.site:
        raise Forbidden(f"only an admin of site {dataset.site} may do this", dataset.id)
