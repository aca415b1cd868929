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
- Dataset listings show what these rules let the caller see: their site's data, data granted in the catalog, and
  (:func:`chain_listing`) data granted on chain, each listed row that only the chain makes visible audited like an
  access check; the node down, listings go on without the chain's rows and say so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from web3.exceptions import Web3Exception

from cloudmri_kernel.catalog.models import Dataset, Grant, utcnow
from cloudmri_kernel.errors import CloudMRIError
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
        _audit(service, identity, dataset.id, dataset.site, need, True, "catalog", "an active grant in the catalog")
        return "grant"
    ledger = getattr(service, "ledger", None)
    chain_note = ""
    if ledger is not None and not own and identity.site is not None:
        allowed, chain_note = _chain_allows(ledger, identity, dataset, need)
        if allowed:
            _audit(service, identity, dataset.id, dataset.site, need, True, "chain", chain_note)
            return "chain grant"
    if need == "read-raw" and own:
        reason = (f"{identity.user} may not read raw k-space (needs custom:cloudmri:read-raw or a read-raw grant)")
    elif own:
        reason = f"{identity.user} lacks the scope for '{need}' on this dataset"
    else:
        reason = f"dataset {dataset.id} belongs to site {dataset.site}; {identity.user} has no grant for '{need}' on it"
    if chain_note:
        reason += f" ({chain_note})"
    _audit(service, identity, dataset.id, dataset.site, need, False,
           "chain" if ledger is not None and not own else "catalog", reason)
    raise Forbidden(reason, dataset.id)


_CHAIN_SCOPES = {"see": ("read-images", "read-raw"), "read-images": ("read-images", "read-raw"),
                 "read-raw": ("read-raw",)}


def _chain_scope_missing(identity: Identity, need: str) -> str:
    """Why the caller's own scopes rule out an on-chain site grant for ``need`` ('' when they do not): as with
    catalog grants to a site, the caller must hold the matching scope themselves."""
    if need == "see":
        if not any(identity.has(s) for s in ("read-images", "read-raw", "upload", "report")):
            return "the caller holds no scope to see data"
    elif not identity.has(need):
        return f"the caller lacks custom:cloudmri:{need}, which a site grant does not give"
    return ""


def _chain_allows(ledger, identity: Identity, dataset: Dataset, need: str) -> tuple[bool, str]:
    """Whether an on-chain grant to one of the caller's site's accounts covers ``need``, and why (for the audit)."""
    missing = _chain_scope_missing(identity, need)
    if missing:
        return False, missing
    try:
        found = ledger.grants.granted_scopes(dataset.sha256, identity.site, _CHAIN_SCOPES[need])
    except NodeUnavailable:
        log.warning("ledger node down: on-chain grants for %s cannot be checked; access refused", dataset.id)
        return False, "the ledger node does not answer, so on-chain grants cannot be checked"
    if found:
        account, scope = found[0]
        return True, f"on-chain grant of {scope} to {account} of site {identity.site}"
    return False, f"no on-chain grant for site {identity.site}"


@dataclass(frozen=True)
class ChainListing:
    """What the chain adds to the caller's dataset listing.

    Attributes:
        state: ``ok`` (the chain's grants, possibly none, are known), ``unavailable`` (the node does not answer:
            nothing is listed on the chain's word) or ``off`` (no ledger, or a caller without a site).
        reasons: dataset SHA-256 → the on-chain grant that makes it visible (for the audit).
        problem: why the chain could not be asked (``unavailable``).
    """

    state: Literal["ok", "unavailable", "off"]
    reasons: dict[str, str] = field(default_factory=dict)
    problem: str = ""


def chain_listing(session: Session, identity: Identity) -> ChainListing:
    """The datasets that on-chain grants to the caller's site's accounts let the caller see (``see``), read from the
    service's replica of the grant table (:meth:`~cloudmri_kernel.service.ledger.ChainGrants.granted_datasets`:
    the same cache period, immediate effect of the service's own revocations, expiry by the chain's clock). The node
    down (or the contracts not readable), the listing fails closed on the chain's part, with an audited
    ``grant-decision`` deny without a dataset, and still answers."""
    service = session.info.get("service")
    ledger = getattr(service, "ledger", None)
    if ledger is None or identity.site is None:
        return ChainListing("off")
    if _chain_scope_missing(identity, "see"):
        return ChainListing("ok")
    try:
        granted = ledger.grants.granted_datasets(identity.site, _CHAIN_SCOPES["see"])
    except (CloudMRIError, Web3Exception) as exc:
        problem = ("the ledger node does not answer" if isinstance(exc, NodeUnavailable)
                   else f"on-chain grants could not be read ({exc})")
        log.warning("%s: datasets granted on chain to site %s are not listed", problem, identity.site)
        _audit(service, identity, None, None, "see", False, "chain",
               f"{problem}, so datasets granted on chain are not listed (site and catalog grants are)")
        return ChainListing("unavailable", problem=problem)
    return ChainListing("ok", {sha: f"on-chain grant of {pairs[0][1]} to {pairs[0][0]} of site {identity.site}"
                               for sha, pairs in granted.items()})


def audit_chain_listed(session: Session, identity: Identity, datasets: list[Dataset], listing: ChainListing) -> None:
    """Audit each listed dataset that only an on-chain grant made visible, as :func:`check_dataset` audits an
    access (``grant-decision``, allow, source chain, need ``see``)."""
    service = session.info.get("service")
    for dataset in datasets:
        _audit(service, identity, dataset.id, dataset.site, "see", True, "chain",
               f"listed: {listing.reasons[dataset.sha256]}")


def _audit(service, identity: Identity, dataset_id: str | None, dataset_site: str | None, need: str, allowed: bool,
           source: str, reason: str) -> None:
    if service is None:
        return
    try:
        service.audit.record("grant-decision", "iam", "success" if allowed else "failure", identity.user,
                             site=identity.site, dataset_id=dataset_id, reason=reason,
                             details={"need": need, "decision": "allow" if allowed else "deny", "source": source,
                                      "dataset_site": dataset_site})
    except Exception:
        log.exception("could not audit the access decision on %s", dataset_id or "a dataset listing")


def require_site_admin(identity: Identity, dataset: Dataset) -> None:
    """Only an admin of the dataset's own site may grant access to it or assign it."""
    require_scope(identity, "admin")
    if identity.site != dataset.site:
        raise Forbidden(f"only an admin of site {dataset.site} may do this", dataset.id)
