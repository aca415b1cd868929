"""The API service's ledger: what it stores is queued for anchoring, a flusher thread anchors it, and cross-site
access may rest on grants recorded on chain.

- Every dataset a user uploads, every series a reconstruction job writes, every saved version of a label set and
  every signed report is queued (durably, in ``LEDGER_DIR/queue.sqlite``) with its content hash (the store's
  plaintext SHA-256; for label sets and reports the hash of their canonical JSON), its kind and its dataset ID,
  before the catalog commits it; at start, anything catalogued but not queued (a crash in between, a ledger
  configured later) is queued too.
- A background thread (:meth:`Ledger.run_flusher`) anchors batches after ``CLOUDMRI_LEDGER_BATCH_DELAY_S`` at
  most; the node down, records stay queued, the flusher backs off, the service keeps serving, and an alert is
  raised: ``cloudmri_ledger_up`` 0 and ``cloudmri_ledger_alert`` 1 in the metrics, ``ledger.alert`` in
  ``/health``, a ``ledger-outage`` audit event and a log warning (``ledger-recovered`` when it is back).
- :class:`ChainGrants` answers "does the chain grant this site this scope on this dataset?" from the
  ``AccessGrants`` contract, trusting an answer for ``CLOUDMRI_LEDGER_GRANT_CACHE_S`` seconds; a revocation the
  service itself sends replaces the cached answer at once.
- For dataset listings it also answers "which datasets does the chain grant this site?" from a :class:`GrantTable`,
  a replica of the contract's grant table kept by reading the grant events of the blocks mined since the last read
  (at most every ``CLOUDMRI_LEDGER_GRANT_CACHE_S`` seconds), never by scanning the whole chain per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from cloudmri_kernel.catalog.models import Dataset, Label, Report, Series
from cloudmri_kernel.ledger.client import Anchored, BlockRef, GrantEvent, Ledger, LedgerError
from cloudmri_kernel.ledger.config import LedgerSettings, ledger_settings
from cloudmri_kernel.ledger.node import rpc_ready

log = logging.getLogger("cloudmri.service.ledger")


@dataclass(frozen=True)
class LedgerStatus:
    """What ``/health`` and the metrics report about the ledger."""

    up: bool
    backlog: int
    oldest_queued_s: float
    alert: bool
    last_error: str

    def to_dict(self) -> dict:
        return {"configured": True, "up": self.up, "backlog": self.backlog,
                "oldest_queued_s": round(self.oldest_queued_s, 3), "alert": self.alert,
                "last_error": self.last_error}


class GrantTable:
    """A replica of the ``AccessGrants`` contract's grant table, kept up to date from its events.

    The contract's table is the fold of its events in chain order (``GrantIssued`` sets the expiry and clears a
    revocation, ``GrantRevoked`` sets it), so replaying the events of the blocks mined since the last read keeps the
    replica exact, at one ``eth_getLogs`` per event kind (and per 10,000 blocks) per read. The head block is read
    with them: its time is the clock ``is_granted`` compares expiries with. A chain that mines only when a
    transaction comes (anvil) stops that clock between transactions, so here a grant expires by the later of the
    head block's time and this host's (``wall``): an expiry takes effect when it passes, not at the next block. A
    chain that went back (a lower head, or another hash at the last block read: replaced or reorganized) is read
    again from the deployment block.

    Args:
        ledger: the service's ledger.
        ttl_s: how long a read is trusted before the next request reads the new blocks.
        clock: monotonic seconds.
        wall: Unix seconds (tests may pass a fake one).
    """

    def __init__(self, ledger: Ledger, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.ledger, self.ttl_s, self.clock, self.wall = ledger, ttl_s, clock, wall
        # held while reading from the node, so that a change the service makes itself (record) lands after a read
        # in flight and is not overwritten by its older events
        self._lock = threading.Lock()
        self._grants: dict[str, dict[tuple[str, str], tuple[int, bool]]] = {}  # grantee: (dataset, scope): state
        self._head: BlockRef | None = None
        self._read_at: float | None = None

    def active(self, grantees: list[str], scopes: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
        """Dataset SHA-256 → the (grantee, scope) pairs among ``grantees`` and ``scopes`` in force now.

        Raises:
            NodeUnavailable: the replica is older than ``ttl_s`` and the node does not answer.
        """
        found: dict[str, list[tuple[str, str]]] = {}
        with self._lock:
            self._catch_up()
            now = self._now()
            for grantee in grantees:
                for (dataset, scope), (expiry, revoked) in self._grants.get(grantee.lower(), {}).items():
                    if scope in scopes and not revoked and expiry > now:
                        found.setdefault(dataset, []).append((grantee, scope))
        return found

    def expired(self, dataset_sha256: str, grantee: str, scope: str) -> bool:
        """Whether this grant is known here and its expiry has passed (by the later of the chain's and this host's
        clock), whatever a node whose clock stands still still answers.

        Raises:
            NodeUnavailable: the replica is older than ``ttl_s`` and the node does not answer.
        """
        with self._lock:
            self._catch_up()
            state = self._grants.get(grantee.lower(), {}).get((dataset_sha256, scope))
            return state is not None and not state[1] and state[0] <= self._now()

    def _now(self) -> float:
        return max(self._head.timestamp, self.wall())

    def record(self, dataset_sha256: str, grantee: str, scope: str, expiry: int | None) -> None:
        """A grant (``expiry`` in Unix seconds) or, with ``expiry`` None, a revocation the service itself just
        made on chain: in force here at once, before its event is read."""
        with self._lock:
            self._apply(GrantEvent(dataset_sha256, grantee, scope, expiry, expiry is None, 0, 0))

    def _catch_up(self) -> None:
        if self._read_at is not None and self.clock() - self._read_at < self.ttl_s:
            return
        head = self.ledger.block("latest")
        last = self._head
        if last is not None and (head.number < last.number or self.ledger.block(last.number).hash != last.hash):
            log.warning("the chain at %s no longer holds block %d (%s) that grants were read up to: reading every "
                        "grant again", self.ledger.rpc_url, last.number, last.hash)
            self._grants.clear()
            last = None
        start = last.number + 1 if last is not None else (self.ledger.deployment or {}).get("deploy_block", 0)
        for event in self.ledger.grant_events(start, head.number):
            self._apply(event)
        self._head, self._read_at = head, self.clock()

    def _apply(self, event: GrantEvent) -> None:
        table = self._grants.setdefault(event.grantee.lower(), {})
        key = (event.dataset, event.scope)
        if event.revoked:
            table[key] = (table.get(key, (0, True))[0], True)
        else:
            table[key] = (event.expiry, False)


class ChainGrants:
    """On-chain grant lookups of the service, cached for ``ttl_s`` seconds.

    Args:
        ledger: the service's ledger.
        ttl_s: how long an answer (a grant, or the accounts of a site) is trusted.
        clock: monotonic seconds (tests may pass a fake one).
    """

    def __init__(self, ledger: Ledger, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.ledger, self.ttl_s, self.clock = ledger, ttl_s, clock
        self._lock = threading.Lock()
        self._answers: dict[tuple, tuple[float, object]] = {}
        self.table = GrantTable(ledger, ttl_s, clock)

    def _cached(self, key: tuple, ask: Callable[[], object]):
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None and self.clock() - hit[0] < self.ttl_s:
                return hit[1]
        answer = ask()
        with self._lock:
            self._answers[key] = (self.clock(), answer)
        return answer

    def site_accounts(self, site: str) -> list[str]:
        return self._cached(("site", site), lambda: self.ledger.site_accounts(site))

    def granted_scopes(self, dataset_sha256: str, site: str, scopes: tuple[str, ...]) -> list[tuple[str, str]]:
        """(account, scope) of every account of ``site`` that the chain grants one of ``scopes`` on the dataset.

        Raises:
            NodeUnavailable: the node does not answer (the caller then refuses access: it fails closed).
        """
        found = []
        for account in self.site_accounts(site):
            for scope in scopes:
                if self._cached(("grant", dataset_sha256, account, scope),
                                lambda a=account, s=scope: self.ledger.is_granted(dataset_sha256, a, s)) \
                        and not self.table.expired(dataset_sha256, account, scope):
                    found.append((account, scope))
        return found

    def granted_datasets(self, site: str, scopes: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
        """Dataset SHA-256 → (account, scope) of every grant in force on chain to an account of ``site`` for one
        of ``scopes`` (from the :class:`GrantTable`, read at most every ``ttl_s`` seconds).

        Raises:
            NodeUnavailable: the node does not answer (the caller then lists no dataset on the chain's word).
        """
        return self.table.active(self.site_accounts(site), scopes)

    def grant(self, dataset_sha256: str, account: str, scope: str, expiry: datetime) -> str:
        tx_hash = self.ledger.grant(dataset_sha256, account, scope, expiry)
        self._forget(dataset_sha256, account, scope)
        self.table.record(dataset_sha256, account, scope, int(expiry.timestamp()))
        return tx_hash

    def revoke(self, dataset_sha256: str, account: str, scope: str) -> str:
        """Revoke on chain; the service's own checks and listings refuse at once, whatever they had cached."""
        tx_hash = self.ledger.revoke(dataset_sha256, account, scope)
        with self._lock:
            self._answers[("grant", dataset_sha256, account, scope)] = (self.clock(), False)
        self.table.record(dataset_sha256, account, scope, None)
        return tx_hash

    def _forget(self, dataset_sha256: str, account: str, scope: str) -> None:
        with self._lock:
            self._answers.pop(("grant", dataset_sha256, account, scope), None)


class ServiceLedger:
    """The ledger of one API service: its queue, its flusher thread, its health and its grant cache.

    Args:
        ledger: the :class:`Ledger` (its directory, node and key).
        config: the ledger settings (poll, alert and cache periods).
        audit: the service's :class:`~cloudmri_kernel.monitor.audit.AuditLog` (outage and recovery events).
    """

    def __init__(self, ledger: Ledger, config: LedgerSettings, audit):
        self.ledger, self.config, self.audit = ledger, config, audit
        self.grants = ChainGrants(ledger, config.grant_cache_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.last_error = ""

    @classmethod
    def from_settings(cls, audit) -> ServiceLedger | None:
        """The configured ledger, or None when the service runs without one (see ``CLOUDMRI_LEDGER_ENABLED``)."""
        config = ledger_settings()
        if not config.service_enabled:
            return None
        return cls(Ledger.from_settings(config), config, audit)

    # -- queueing ----------------------------------------------------------------------------------------------

    def queue_dataset(self, dataset: Dataset) -> None:
        self.ledger.add("dataset", dataset.sha256, dataset.id, f"{dataset.site}/{dataset.sha256}")

    def queue_series(self, series: Series) -> None:
        self.ledger.add("series", series.sha256, series.dataset_id, f"{series.site}/{series.sha256}")

    def queue_label(self, label: Label, dataset_id: str) -> None:
        self.ledger.add("label", label.sha256, dataset_id, f"label/{label.id}")

    def queue_report(self, report: Report) -> None:
        self.ledger.add("report", report.sha256, report.dataset_id, f"report/{report.id}")

    def queue_catalogued(self, catalog) -> int:
        """Queue every dataset, series, hashed label set and signed report of the catalog that the queue lacks;
        how many were new."""
        with catalog.session() as session:
            entries = [("dataset", sha, dataset_id, f"{site}/{sha}") for dataset_id, sha, site in
                       session.execute(select(Dataset.id, Dataset.sha256, Dataset.site))]
            entries += [("series", sha, dataset_id, f"{site}/{sha}") for dataset_id, sha, site in
                        session.execute(select(Series.dataset_id, Series.sha256, Series.site))]
            entries += [("label", sha, dataset_id, f"label/{label_id}") for label_id, sha, dataset_id in
                        session.execute(select(Label.id, Label.sha256, Series.dataset_id)
                                        .join(Series, Series.id == Label.series_id)
                                        .where(Label.sha256.is_not(None)))]
            entries += [("report", sha, dataset_id, f"report/{report_id}") for report_id, sha, dataset_id in
                        session.execute(select(Report.id, Report.sha256, Report.dataset_id)
                                        .where(Report.sha256.is_not(None)))]
        before = self.ledger.queue.backlog()[0]
        self.ledger.add_many(entries)
        return self.ledger.queue.backlog()[0] - before

    # -- the flusher -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.ledger.run_flusher, name="cloudmri-ledger-flusher", daemon=True,
                                        args=(self._stop, self.config.flush_poll_s, self._on_error,
                                              self._on_success))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ledger.tx_timeout_s)
        self.ledger.close()

    def _on_error(self, exc: Exception) -> None:
        self.last_error = str(exc)
        if not self._failing:
            self._failing = True
            backlog = self.ledger.queue.backlog()[0]
            log.warning("ledger alert: anchoring failed, %d records stay queued: %s", backlog, exc)
            self._audit("ledger-outage", "failure", f"anchoring failed; {backlog} records stay queued: {exc}")

    def _on_success(self, anchored: list[Anchored]) -> None:
        if self._failing and anchored:
            self._failing = False
            self.last_error = ""
            count = sum(a.count for a in anchored)
            log.warning("ledger recovered: %d queued records anchored", count)
            self._audit("ledger-recovered", "success", f"the node answers again; {count} queued records anchored")

    def _audit(self, action: str, outcome: str, reason: str) -> None:
        try:
            self.audit.record(action, "configuration", outcome, None, reason=reason,
                              details={"rpc_url": self.ledger.rpc_url})
        except Exception:
            log.exception("could not write the audit event %s", action)

    # -- health ------------------------------------------------------------------------------------------------

    def status(self) -> LedgerStatus:
        up = rpc_ready(self.ledger.rpc_url)
        backlog, oldest = self.ledger.queue.backlog()
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        alert = not up or self._failing or age > self.config.alert_after_s
        return LedgerStatus(up, backlog, age, alert, self.last_error)


def ledger_error_status(exc: LedgerError) -> int:
    """HTTP status for a ledger failure: 503 when the node is down, else 502 (the chain refused)."""
    from cloudmri_kernel.ledger.client import NodeUnavailable

    return 503 if isinstance(exc, NodeUnavailable) else 502
