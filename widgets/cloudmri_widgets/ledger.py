"""A ledger browser for the notebook and Voilà: find a dataset, see where its record is anchored, verify it on chain
with one click, and (site admins) grant or revoke access on chain.

``LedgerBrowser()`` uses the notebook's default client (``CLOUDMRI_SERVICE_URL`` and the user's own token); search
takes a subject pseudonym, a dataset ID or a series ID. It is a thin view over the API service (the only door to
data): every answer comes from the service's ledger routes through :class:`cloudmri_kernel.client.Client`, with
the caller's own token, so the widget can show nothing the caller may not see and change nothing the caller may
not change. What it shows is what ``cloudmri ledger verify``/``grants`` print (docs/ledger.md): a record is a
dataset's SHA-256, anchored as a leaf of an RFC 6962 Merkle tree (Merkle 1987) whose root one transaction put on
chain; its inclusion proof (audit path) links the leaf to that root. *Verify* asks the service to re-hash the
stored object and re-check the proof against the root on chain now.

Example:
    >>> from cloudmri_widgets import LedgerBrowser
    >>> browser = LedgerBrowser()  # doctest: +SKIP
    >>> panels = browser.search("P-3f2a9c")  # doctest: +SKIP
    >>> panels[0].verify()  # doctest: +SKIP
    True

References:
    Zhou et al. Cloud-MRI, arXiv 2310.11641. RFC 6962, section 2.1 (Merkle audit paths).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

import ipywidgets as widgets

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import CloudMRIError

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

__all__ = ["LedgerBrowser", "DatasetLedger"]

_ID = re.compile(r"[0-9a-f]{32}")
_SCOPES = ("read-images", "read-raw")
_STYLE = """<style>
.cml-table { border-collapse: collapse; font: 12px/1.4 system-ui, sans-serif; margin: 2px 0 6px 0; }
.cml-table th, .cml-table td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
.cml-table th { background: #f4f4f4; font-weight: 600; }
.cml-hash { font-family: ui-monospace, monospace; word-break: break-all; }
.cml-ok { color: #276749; font-weight: 600; }
.cml-bad { color: #c53030; font-weight: 600; }
.cml-wait { color: #975a16; font-weight: 600; }
.cml-title { font: 600 13px system-ui, sans-serif; margin-top: 8px; }
.cml-msg { line-height: 1.4; padding: 4px 0; }
</style>"""


def _reason(error: Exception) -> str:
    """What the service (or the connection) said, without the HTTP plumbing."""
    if isinstance(error, ServiceError):
        detail = error.detail
        if isinstance(detail, dict):
            return str(detail.get("message", detail))
        if isinstance(detail, list):  # FastAPI's validation errors
            return "; ".join(f"{'.'.join(map(str, d.get('loc', ())[1:]))}: {d.get('msg')}" for d in detail)
        return f"{detail} (HTTP {error.status})" if error.status in (401, 403) else str(detail)
    return str(error)


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _hash(value: str | None) -> str:
    return f'<span class="cml-hash">{escape(value or "")}</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are HTML already escaped by the caller."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="cml-table"><tr>{head}</tr>{body}</table>'


def _mark(kind: str, text: str) -> str:
    symbol = {"ok": "✓", "bad": "✗", "wait": "⧗"}[kind]
    return f'<div class="cml-msg"><span class="cml-{kind}">{symbol}</span> {escape(text, quote=False)}</div>'


class DatasetLedger(widgets.VBox):
    """One dataset's ledger record, its inclusion proof, a *Verify* button, and its grants on chain.

    Args:
        client: the caller's connection to the API service.
        dataset: the dataset as the service lists it (``id``, ``sha256``, ``site``, ``filename`` …).
        can_grant: show the grant and revoke controls (the caller's token has the ``admin`` scope).

    Attributes:
        record: the service's last provenance answer (``state``, ``block_number``, ``tx_hash``, ``root``,
            ``proof`` …), or None when it refused (``verification`` says why).
        verified: the outcome of the service's last check (each provenance answer is one: at loading and at
            every :meth:`verify`): True (holds), False (refused or failed), None (not anchored yet).
        grants: the grants on chain as the service last listed them.
    """

    def __init__(self, client: Client, dataset: dict, can_grant: bool):
        self.client, self.dataset = client, dataset
        self.record: dict | None = None
        self.verified: bool | None = None
        self.grants: list[dict] = []
        subject = f' · subject {escape(dataset["subject"])}' if dataset.get("subject") else ""
        self.title = widgets.HTML(
            f'{_STYLE}<div class="cml-title">dataset {escape(dataset["id"])} · '
            f'{escape(dataset.get("filename") or "")} · site {escape(dataset["site"])}{subject}</div>')
        self.history = widgets.HTML()
        self.verify_button = widgets.Button(description="Verify", icon="check",
                                            tooltip="Re-hash the stored object and check its proof on chain now")
        self.verification = widgets.HTML()
        self.grants_table = widgets.HTML()
        self.grantee = widgets.Text(placeholder="site or 0x account", description="Grantee",
                                    layout=widgets.Layout(width="300px"))
        self.scope = widgets.Dropdown(options=_SCOPES, value="read-images", description="Scope",
                                      layout=widgets.Layout(width="220px"))
        self.days = widgets.BoundedIntText(value=30, min=1, max=3650, description="Days",
                                           layout=widgets.Layout(width="160px"))
        self.grant_button = widgets.Button(description="Grant", icon="key", button_style="primary")
        self.revoke_button = widgets.Button(description="Revoke", icon="ban", button_style="danger")
        self.grant_message = widgets.HTML()
        self.grant_controls = widgets.VBox([
            widgets.HBox([self.grantee, self.scope, self.days, self.grant_button, self.revoke_button]),
            self.grant_message])
        if not can_grant:  # no admin scope: nothing to offer; the service would answer 403 anyway
            self.grant_controls.layout.display = "none"
            for control in (self.grantee, self.scope, self.days, self.grant_button, self.revoke_button):
                control.disabled = True
        self.verify_button.on_click(lambda _: self.verify())
        self.grant_button.on_click(lambda _: self.grant(self.grantee.value, self.scope.value, self.days.value))
        self.revoke_button.on_click(lambda _: self.revoke(self.grantee.value, self.scope.value))
        super().__init__([self.title, self.history, widgets.HBox([self.verify_button, self.verification]),
                          widgets.HTML('<div class="cml-title">grants on chain</div>'), self.grants_table,
                          self.grant_controls])
        self.refresh()

    def refresh(self) -> None:
        """Ask the service again for the record (anchoring state, proof) and the grants, and show them."""
        self._check(show=False)
        self._load_grants()

    def _check(self, show: bool) -> None:
        try:
            self.record = self.client.provenance(self.dataset["id"])
        except (CloudMRIError, OSError) as error:
            self.record, self.verified = None, False
            self.verification.value = _mark("bad", _reason(error))
            self._show_history(failure=_reason(error))
            return
        self.verified = True if self.record["state"] == "anchored" else None
        self._show_history()
        if show:
            self.verification.value = self._verdict()

    def _verdict(self) -> str:
        record = self.record
        if record["state"] != "anchored":
            return _mark("wait", f"queued since {_when(record['queued_at'])}: not on chain yet (the service "
                                 "anchors it within its batch delay)")
        return _mark("ok", f"verified: sha256 {record['sha256']} re-hashed from the store is in batch "
                           f"{record['batch_id']} whose root {record['root']} site {record['anchored_by_site']} "
                           f"anchored in block {record['block_number']} ({_when(record['anchored_at'])}), "
                           f"transaction {record['tx_hash']}")

    def _show_history(self, failure: str | None = None) -> None:
        headers = ["kind", "sha256", "state", "batch / Merkle root", "leaf", "block", "transaction", "time", "site"]
        record = self.record
        if record is None:
            row = ["dataset", _hash(self.dataset["sha256"]), _mark("bad", failure or ""), "", "", "", "", "", ""]
            self.history.value = _table(headers, [row])
            return
        anchored = record["state"] == "anchored"
        row = ["dataset", _hash(record["sha256"]), escape(record["state"]),
               f"batch {_hash(record['batch_id'])}<br>root {_hash(record['root'])}" if anchored else "",
               f"{record['leaf_index']} of {record['batch_size']}" if anchored else "",
               str(record["block_number"]) if anchored else "", _hash(record["tx_hash"]) if anchored else "",
               escape(_when(record["anchored_at"] if anchored else record["queued_at"])),
               escape(record["anchored_by_site"] or "")]
        proof = ""
        if anchored:
            path = "".join(f"<li>{_hash(h)}</li>" for h in record["proof"]) or "<li>none: the leaf is the root</li>"
            proof = (f"<details><summary>inclusion proof: {len(record['proof'])} hash(es), bottom up "
                     f"(RFC 6962)</summary><ol>{path}</ol></details>")
        self.history.value = _table(headers, [row, *self._derived_rows()]) + proof

    def _derived_rows(self) -> list[list[str]]:
        """Rows for what was derived from the dataset and anchored too (series, labels, reports)."""
        try:
            records = self.client.ledger_history(self.dataset["id"])
        except (CloudMRIError, OSError):
            return []
        rows = []
        for record in records:
            if record["kind"] == "dataset":
                continue
            confirmed = record["state"] == "confirmed"
            rows.append([escape(record["kind"]), _hash(record["object_hash"]), escape(record["state"]),
                         f"batch {_hash(record['batch_id'])}<br>root {_hash(record['root'])}"
                         if record["batch_id"] else "",
                         f"{record['leaf_index']} of {record['batch_size']}" if record["batch_id"] else "",
                         str(record["block_number"]) if confirmed else "", _hash(record["tx_hash"]),
                         escape(_when(record["anchored_at"] if confirmed else record["queued_at"])), ""])
        return rows

    def verify(self) -> bool | None:
        """Re-check the record against the chain (the service re-hashes the stored object and checks the proof).

        Returns:
            True when it holds (shown as ✓), False when it does not (✗ and the service's reason, e.g. which
            hash differs), None when the record is still queued for anchoring.
        """
        self.verify_button.disabled, self.verify_button.description = True, "Verifying…"
        try:
            self._check(show=True)
        finally:
            self.verify_button.disabled, self.verify_button.description = False, "Verify"
        return self.verified

    def _load_grants(self) -> None:
        try:
            self.grants = self.client.ledger_grants(self.dataset["id"])
        except (CloudMRIError, OSError) as error:
            self.grants = []
            self.grants_table.value = _mark("bad", _reason(error))
            return
        if not self.grants:
            self.grants_table.value = "<i>no grants on chain</i>"
            return
        now = datetime.now(UTC)
        rows = []
        for grant in self.grants:
            expires = datetime.fromisoformat(grant["expires_at"]) if grant.get("expires_at") else None
            state = "active" if grant["active"] else ("expired" if expires is None or expires <= now else "revoked")
            rows.append([_hash(grant["account"]), escape(grant["scope"]), escape(_when(grant.get("expires_at"))),
                         escape(state)])
        self.grants_table.value = _table(["grantee account", "scope", "expires", "state"], rows)

    @staticmethod
    def _grantee(value: str) -> dict[str, str]:
        value = value.strip()
        return {"account": value} if value.startswith("0x") else {"site": value}

    def grant(self, grantee: str, scope: str, days: int) -> bool:
        """Grant a site (each of its accounts registered on chain) or one ``0x`` account ``scope`` for ``days``.

        Returns:
            True when the service granted it; otherwise the service's reason (e.g. its 403) is shown.
        """
        if not grantee.strip():
            self.grant_message.value = _mark("bad", "name the grantee: a site (e.g. siteB) or an 0x account")
            return False
        expires_at = datetime.now(UTC) + timedelta(days=days)
        try:
            made = self.client.ledger_grant(self.dataset["id"], scope, expires_at, **self._grantee(grantee))
        except (CloudMRIError, OSError) as error:
            self.grant_message.value = _mark("bad", _reason(error))
            return False
        until = _when(expires_at.isoformat())
        self.grant_message.value = _mark("ok", f"granted {scope} to {grantee.strip()} until {until}: " + ", ".join(
            f"{g['account']} (transaction {g['tx_hash']})" for g in made))
        self._load_grants()
        return True

    def revoke(self, grantee: str, scope: str) -> bool:
        """Revoke a site's (or one ``0x`` account's) grant of ``scope``; the service refuses it at once.

        Returns:
            True when the service revoked it; otherwise the service's reason is shown.
        """
        if not grantee.strip():
            self.grant_message.value = _mark("bad", "name the grantee: a site (e.g. siteB) or an 0x account")
            return False
        try:
            revoked = self.client.ledger_revoke(self.dataset["id"], scope, **self._grantee(grantee))
        except (CloudMRIError, OSError) as error:
            self.grant_message.value = _mark("bad", _reason(error))
            return False
        self.grant_message.value = _mark("ok", f"revoked {scope} of {grantee.strip()}: " + ", ".join(
            f"{g['account']} (transaction {g['tx_hash']})" for g in revoked))
        self._load_grants()
        return True


class LedgerBrowser(widgets.VBox):
    """Search the ledger by dataset ID, series ID or subject pseudonym and show each dataset's record.

    Args:
        client: a :class:`cloudmri_kernel.client.Client`; None for the notebook's default client.
        limit: the most datasets of one subject to show.

    Attributes:
        query: the search box; *Search* (``search_button``) looks it up.
        message: what the last search found, or why it found nothing.
        panels: one :class:`DatasetLedger` per dataset found.
        can_grant: the caller's token has the ``admin`` scope, so grant controls are shown.
    """

    def __init__(self, client: Client | None = None, limit: int = 20):
        if client is None:
            from cloudmri_kernel.notebook import default_client
            client = default_client()
        self.client, self.limit = client, limit
        caller = client.whoami()
        self.can_grant = "admin" in caller["scopes"]
        self.query = widgets.Text(placeholder="dataset ID, series ID or subject pseudonym", description="Find",
                                  layout=widgets.Layout(width="420px"))
        self.search_button = widgets.Button(description="Search", icon="search")
        self.message = widgets.HTML()
        self.panels: list[DatasetLedger] = []
        self.results = widgets.VBox()
        self.search_button.on_click(lambda _: self.search(self.query.value))
        header = widgets.HTML(f"{_STYLE}<b>Ledger</b> · {escape(caller['user'])} of site {escape(caller['site'])}")
        super().__init__([header, widgets.HBox([self.query, self.search_button]), self.message, self.results])

    def search(self, query: str) -> list[DatasetLedger]:
        """Find datasets: a 32-hex ID is tried as a dataset, then as a series (its source dataset); anything else
        as a subject pseudonym (the service's dataset search). Shows and returns one panel per dataset."""
        query = query.strip()
        self.query.value = query
        self.panels, self.results.children = [], ()
        if not query:
            self.message.value = _mark("bad", "type a dataset ID, a series ID or a subject pseudonym")
            return []
        self.search_button.disabled = True
        try:
            found, how = self._resolve(query)
        except (CloudMRIError, OSError) as error:
            self.message.value = _mark("bad", f"{query}: {_reason(error)}")
            return []
        finally:
            self.search_button.disabled = False
        if not found:
            self.message.value = _mark("bad", f"no dataset, series or subject pseudonym '{query}' that you may see: "
                                              "check the ID (32 hex digits) or the pseudonym")
            return []
        self.panels = [DatasetLedger(self.client, dataset, self.can_grant) for dataset in found]
        self.results.children = tuple(self.panels)
        self.message.value = escape(f"{len(found)} dataset(s) {how}")
        return self.panels

    def _resolve(self, query: str) -> tuple[list[dict], str]:
        if _ID.fullmatch(query):
            try:
                return [self.client.dataset(query)], f"with ID {query}"
            except ServiceError as error:
                if error.status != 404:
                    raise
            try:
                series = self.client.series(query)
            except ServiceError as error:
                if error.status != 404:
                    raise
            else:
                return [self.client.dataset(series["dataset_id"])], f"reconstructed into series {query}"
        found = self.client.datasets(subject=query, limit=self.limit)
        return found, f"of subject {query}"
