"""The ledger through the API: a dataset's provenance (re-hashed from the store, proof checked on chain) and grants
recorded on chain (``AccessGrants``), issued and revoked by an admin of the dataset's site with the service's key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field
from web3 import Web3

from cloudmri_kernel.catalog.models import Dataset, utcnow
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.ledger.provenance import verify_dataset
from cloudmri_kernel.service.deps import DB, Caller, Service, fetch
from cloudmri_kernel.service.ledger import ServiceLedger
from cloudmri_kernel.service.policy import check_dataset, require_site_admin
from cloudmri_kernel.service.schemas import Out, Problem, Strict

router = APIRouter(tags=["ledger"])
ERRORS = {400: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem},
          503: {"model": Problem}}


class ProvenanceOut(Out):
    dataset_id: str
    site: str
    sha256: str = Field(description="SHA-256 recomputed now from the encrypted object in the store")
    state: Literal["anchored", "queued"]
    queued_at: datetime
    batch_id: str | None = None
    leaf_index: int | None = None
    batch_size: int | None = None
    proof: list[str] = Field(default_factory=list, description="Audit path (hex), bottom up (RFC 6962)")
    root: str | None = None
    block_number: int | None = None
    tx_hash: str | None = None
    anchored_at: datetime | None = None
    anchored_by_site: str | None = None
    submitter: str | None = None


class ChainGrantIn(Strict):
    dataset_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    site: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                             description="A site registered on chain: its accounts get the grant ...")
    account: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{40}$", description="... or one account")
    scope: Literal["read-raw", "read-images"]
    expires_at: datetime = Field(description="When the grant ends (timezone-aware, in the future)")


class ChainGrantOut(Out):
    dataset_id: str
    dataset_sha256: str
    account: str
    scope: str
    expires_at: datetime | None = None
    active: bool
    tx_hash: str | None = None


class LedgerRecordOut(Out):
    kind: str = Field(description="dataset, series, label, report or model")
    object_hash: str
    name: str | None = None
    state: Literal["queued", "pending", "sent", "confirmed"] = Field(
        description="queued: waiting for a batch; pending/sent: batched, transaction not yet confirmed")
    queued_at: datetime
    batch_id: str | None = None
    root: str | None = None
    leaf_index: int | None = None
    batch_size: int | None = None
    proof: list[str] = Field(default_factory=list, description="Audit path (hex), bottom up (RFC 6962)")
    block_number: int | None = None
    tx_hash: str | None = None
    anchored_at: datetime | None = None


def _ledger(service) -> ServiceLedger:
    if service.ledger is None:
        raise UsageError("this service runs without a ledger (CLOUDMRI_LEDGER_ENABLED): there is no on-chain "
                         "provenance or grant")
    return service.ledger


@router.get("/datasets/{dataset_id}/provenance", response_model=ProvenanceOut, responses=ERRORS)
def provenance(dataset_id: str, request: Request, caller: Caller, db: DB, service: Service) -> ProvenanceOut:
    """Re-hash the dataset's stored object, compare it with the hash the ledger anchored, and check the inclusion
    proof against the root on chain. 409 names both hashes when the stored object was altered."""
    ledger = _ledger(service)
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "see")
    found = verify_dataset(ledger.ledger, service.store, dataset.id, dataset.site, dataset.sha256)
    out = ProvenanceOut(dataset_id=found.dataset_id, site=found.site, sha256=found.sha256, state=found.state,
                        queued_at=datetime.fromtimestamp(found.queued_at, UTC))
    check = found.verification
    if check is not None:
        out = out.model_copy(update=dict(
            batch_id=check.batch_id, leaf_index=check.leaf_index, batch_size=check.batch_size,
            proof=list(check.proof), root=check.root, block_number=check.block_number, tx_hash=check.tx_hash,
            anchored_at=check.time, anchored_by_site=check.site, submitter=check.submitter))
    request.state.audit_reason = f"{found.state}: sha256 {found.sha256}"
    return out


@router.get("/datasets/{dataset_id}/ledger-history", response_model=list[LedgerRecordOut], responses=ERRORS)
def ledger_history(dataset_id: str, request: Request, caller: Caller, db: DB, service: Service
                   ) -> list[LedgerRecordOut]:
    """Every record the ledger holds for a dataset (the raw file and what was derived from it: series, labels,
    reports), oldest first, with its batch and proof. :func:`provenance` re-checks the dataset's own record."""
    ledger = _ledger(service)
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "see")
    out = []
    for record, batch in ledger.ledger.history(dataset.id):
        confirmed = batch is not None and batch.state == "confirmed"
        out.append(LedgerRecordOut(
            kind=record.kind, object_hash=record.object_hash, name=record.name,
            state=batch.state if batch is not None else "queued",
            queued_at=datetime.fromtimestamp(record.queued_at, UTC), batch_id=record.batch_id,
            root=batch.root if batch else None, leaf_index=record.leaf_index, batch_size=batch.count if batch else None,
            proof=[h.hex() for h in record.proof], block_number=batch.block_number if confirmed else None,
            tx_hash=batch.tx_hash if batch else None,
            anchored_at=datetime.fromtimestamp(batch.timestamp, UTC) if confirmed and batch.timestamp else None))
    request.state.audit_reason = f"{len(out)} ledger record(s)"
    return out


def _grantees(ledger: ServiceLedger, site: str | None, account: str | None) -> list[str]:
    if (site is None) == (account is None):
        raise UsageError("name exactly one grantee: a site or an account")
    if account is not None:
        return [Web3.to_checksum_address(account)]
    accounts = ledger.grants.site_accounts(site)
    if not accounts:
        raise UsageError(f"site '{site}' has no account registered on chain: the consortium admin registers it "
                         "(`cloudmri ledger register-site ACCOUNT SITE`)")
    return accounts


@router.post("/ledger/grants", status_code=201, response_model=list[ChainGrantOut], responses=ERRORS)
def create_chain_grant(body: ChainGrantIn, request: Request, caller: Caller, db: DB,
                       service: Service) -> list[ChainGrantOut]:
    """Grant a site (each of its registered accounts) or one account a scope on a dataset, on chain."""
    ledger = _ledger(service)
    dataset = fetch(db, Dataset, body.dataset_id, request)
    require_site_admin(caller, dataset)
    if body.expires_at.tzinfo is None:
        raise UsageError("expires_at needs a time zone, e.g. 2027-01-31T00:00:00Z")
    if body.expires_at <= utcnow():
        raise UsageError("expires_at is in the past")
    made = []
    for account in _grantees(ledger, body.site, body.account):
        tx_hash = ledger.grants.grant(dataset.sha256, account, body.scope, body.expires_at)
        made.append(ChainGrantOut(dataset_id=dataset.id, dataset_sha256=dataset.sha256, account=account,
                                  scope=body.scope, expires_at=body.expires_at, active=True, tx_hash=tx_hash))
    request.state.audit_reason = "on chain: " + ", ".join(f"{g.account} {g.scope} ({g.tx_hash})" for g in made)
    return made


@router.delete("/ledger/grants", response_model=list[ChainGrantOut], responses=ERRORS)
def revoke_chain_grant(request: Request, caller: Caller, db: DB, service: Service,
                       dataset_id: Annotated[str, Query(pattern=r"^[0-9a-f]{32}$")],
                       scope: Literal["read-raw", "read-images"],
                       site: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None,
                       account: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
                       ) -> list[ChainGrantOut]:
    """Revoke on chain; this service refuses the grantee at once (other services within their cache period)."""
    ledger = _ledger(service)
    dataset = fetch(db, Dataset, dataset_id, request)
    require_site_admin(caller, dataset)
    revoked = []
    for grantee in _grantees(ledger, site, account):
        if not ledger.ledger.is_granted(dataset.sha256, grantee, scope):
            continue
        tx_hash = ledger.grants.revoke(dataset.sha256, grantee, scope)
        revoked.append(ChainGrantOut(dataset_id=dataset.id, dataset_sha256=dataset.sha256, account=grantee,
                                     scope=scope, active=False, tx_hash=tx_hash))
    if not revoked:
        raise UsageError(f"there is no active {scope} grant on dataset {dataset.id} for "
                         f"{site or account} on chain")
    request.state.audit_reason = "on chain: " + ", ".join(f"{g.account} ({g.tx_hash})" for g in revoked)
    return revoked


@router.get("/ledger/grants", response_model=list[ChainGrantOut], responses=ERRORS)
def list_chain_grants(request: Request, caller: Caller, db: DB, service: Service,
                      dataset_id: Annotated[str, Query(pattern=r"^[0-9a-f]{32}$")]) -> list[ChainGrantOut]:
    """Every grant on chain for a dataset the caller may see, with its state."""
    ledger = _ledger(service)
    dataset = fetch(db, Dataset, dataset_id, request)
    check_dataset(db, caller, dataset, "see")
    return [ChainGrantOut(dataset_id=dataset.id, dataset_sha256=dataset.sha256, account=g.grantee, scope=g.scope,
                          expires_at=datetime.fromtimestamp(g.expiry, UTC), active=g.active)
            for g in ledger.ledger.grants(dataset.sha256)]
