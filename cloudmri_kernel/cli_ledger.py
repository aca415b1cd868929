"""``cloudmri ledger …``: the blockchain ledger of provenance and access grants.

The node (``ledger node``) and deployment (``ledger deploy``) are run by the consortium admin or, on one machine,
by the workbench's operator; the other commands act as this site, with the key of ``CLOUDMRI_LEDGER_KEY_FILE``.
Expected errors print one line and exit 1 (a failed verification, a refused transaction, the node down) or 2
(bad usage).
"""

from __future__ import annotations

import json
import re
import signal
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloudmri_kernel.cli import app, err, out, reports_errors
from cloudmri_kernel.errors import UsageError

ledger_app = typer.Typer(help="Blockchain ledger: anchor hashes in Merkle batches, verify them, manage grants.",
                         no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

_DATASET_ID = re.compile(r"[0-9a-f]{32}")
KIND_HELP = "Record kind: dataset, series, label, report or model."


def _ledger():
    from cloudmri_kernel.ledger.client import Ledger

    return Ledger.from_settings()


def _when(timestamp: int | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _json_out(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@ledger_app.command()
@reports_errors
def node(
    directory: Annotated[Path | None, typer.Option("--dir", help="Where the chain's state file lives "
                                                   "(default: CLOUDMRI_LEDGER_DIR).")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: CLOUDMRI_LEDGER_PORT).")] = None,
) -> None:
    """Run the local ledger node (anvil) in the foreground; Ctrl-C stops it and saves the chain."""
    from cloudmri_kernel.ledger.config import ledger_settings
    from cloudmri_kernel.ledger.node import AnvilNode

    config = ledger_settings()
    chain = AnvilNode(directory or config.directory, port or config.port, config.anvil)
    chain.start()
    out.print(f"ledger node on {chain.url}, state in {chain.state_file} (Ctrl-C stops it)", highlight=False)
    # SIGTERM (an operator, systemd) stops it like Ctrl-C; SIGINT too when a shell started it ignoring SIGINT
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = chain.wait()
        raise UsageError(f"anvil exited with status {code}; see {chain.directory / 'anvil.log'}")
    except KeyboardInterrupt:
        chain.stop()
        out.print("ledger node stopped; its state is saved", highlight=False)


@ledger_app.command()
@reports_errors
def address() -> None:
    """Print this site's ledger account (to be registered by the consortium admin)."""
    with _ledger() as ledger:
        out.print(ledger.address, highlight=False)


@ledger_app.command()
@reports_errors
def deploy(site: Annotated[str | None, typer.Option(help="Register this account for this site "
                                                    "(default: CLOUDMRI_LEDGER_SITE or CLOUDMRI_SITE).")] = None
           ) -> None:
    """Deploy the provenance and access-grant contracts with this account as consortium admin."""
    from cloudmri_kernel.ledger.config import ledger_settings

    with _ledger() as ledger:
        deployment = ledger.deploy(site or ledger_settings().site_name)
    out.print(f"provenance registry {deployment['provenance']}\naccess grants {deployment['grants']}\n"
              f"chain {deployment['chain_id']}, EVM {deployment['evm_version']}", highlight=False)


@ledger_app.command()
@reports_errors
def attach(provenance: Annotated[str, typer.Argument(help="Address of the provenance registry.")],
           grants: Annotated[str, typer.Argument(help="Address of the access-grant registry.")]) -> None:
    """Use contracts the consortium deployed."""
    with _ledger() as ledger:
        ledger.attach(provenance, grants)
    out.print(f"attached to {provenance} and {grants}", highlight=False)


@ledger_app.command("register-site")
@reports_errors
def register_site(account: Annotated[str, typer.Argument(help="The site's account address.")],
                  site: Annotated[str, typer.Argument(help="The site's name.")]) -> None:
    """Let a site's account anchor records (consortium admin only)."""
    with _ledger() as ledger:
        tx_hash = ledger.register_site(account, site)
    out.print(f"registered {account} for site {site} (transaction {tx_hash})", highlight=False)


@ledger_app.command()
@reports_errors
def anchor(
    files: Annotated[list[Path], typer.Argument(help="Files to hash and anchor.")],
    kind: Annotated[str, typer.Option(help=KIND_HELP)] = "dataset",
    dataset: Annotated[str | None, typer.Option(help="Dataset ID the records belong to.")] = None,
) -> None:
    """Hash files (SHA-256), queue their records and anchor them now, in one batch per batch size."""
    with _ledger() as ledger:
        records = ledger.anchor_files(files, kind, dataset)
        for path, record in zip(files, records, strict=True):
            batch = ledger.queue.batch(record.batch_id)
            out.print(f"{record.object_hash}  {path}  block {batch.block_number}  tx {batch.tx_hash}",
                      highlight=False)


@ledger_app.command()
@reports_errors
def flush() -> None:
    """Anchor every queued record now (after an outage of the node, for instance)."""
    with _ledger() as ledger:
        anchored = ledger.flush()
    out.print(f"anchored {sum(a.count for a in anchored)} records in {len(anchored)} transactions", highlight=False)


def _verify_dataset(ledger, dataset_id: str):
    """A catalogued dataset: its stored object re-hashed (decrypted from the store), then checked on chain."""
    from cloudmri_kernel.catalog import Catalog
    from cloudmri_kernel.catalog.models import Dataset
    from cloudmri_kernel.config import settings
    from cloudmri_kernel.ledger.provenance import verify_dataset
    from cloudmri_kernel.store import ObjectStore

    config = settings()
    catalog = Catalog.open(config.catalog_url)
    try:
        with catalog.session() as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                raise UsageError(f"the catalog ({config.catalog_url or config.data_dir}) has no dataset {dataset_id}")
            site, address = dataset.site, dataset.sha256
    finally:
        catalog.dispose()
    found = verify_dataset(ledger, ObjectStore.from_settings(config), dataset_id, site, address)
    if found.verification is None:
        raise UsageError(f"dataset {dataset_id} (sha256 {found.sha256}, recomputed from the store) is queued but "
                         "not yet anchored: the service's flusher sends it (is the node running?) or run "
                         "`cloudmri ledger flush`")
    return found.verification, f"\n  recomputed from the encrypted object {site}/{address} in the store"


@ledger_app.command()
@reports_errors
def verify(
    target: Annotated[str, typer.Argument(help="A dataset ID of the catalog (32 hex digits), a file, or the "
                                          "SHA-256 of an object.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, with the inclusion proof.")] = False,
) -> None:
    """Check that a dataset, file or hash was anchored: recompute the hash (a dataset's from its encrypted object
    in the store), check its proof against the on-chain root."""
    with _ledger() as ledger:
        path, note = Path(target), ""
        if path.exists():
            check = ledger.verify_file(path)
        elif _DATASET_ID.fullmatch(target):
            check, note = _verify_dataset(ledger, target)
        else:
            check = ledger.verify(target)
    if as_json:
        _json_out({**asdict(check), "time": check.time.isoformat()})
        return
    out.print(f"[bold green]verified[/] sha256 {check.object_hash} ({check.kind}"
              f"{', dataset ' + check.dataset_id if check.dataset_id else ''})\n"
              f"  block {check.block_number}, {_when(check.timestamp)}\n  transaction {check.tx_hash}\n"
              f"  site {check.site} ({check.submitter}), leaf {check.leaf_index} of {check.batch_size}, "
              f"proof of {len(check.proof)} hashes to root {check.root}{note}", highlight=False)


@ledger_app.command()
@reports_errors
def history(
    dataset_id: Annotated[str, typer.Argument(help="Dataset ID, or the dataset's SHA-256.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the records of a dataset and what was derived from it, with where they are anchored."""
    with _ledger() as ledger:
        rows = [{"kind": r.kind, "object_hash": r.object_hash, "dataset_id": r.dataset_id,
                 "state": b.state if b else "queued", "block": b.block_number if b else None,
                 "tx_hash": b.tx_hash if b else None, "time": _when(b.timestamp) if b else ""}
                for r, b in ledger.history(dataset_id)]
    if not rows:
        raise UsageError(f"the ledger has no records of dataset {dataset_id!r}")
    if as_json:
        _json_out(rows)
        return
    table = Table(title=f"history of {dataset_id}", title_justify="left")
    for column in ("kind", "object_hash", "state", "block", "time", "tx_hash"):
        table.add_column(column.replace("_", " "), no_wrap=column.endswith("hash"), overflow="fold")
    for row in rows:
        table.add_row(row["kind"], row["object_hash"], row["state"], str(row["block"] or ""), row["time"],
                      row["tx_hash"] or "")
    out.print(table)


@ledger_app.command()
@reports_errors
def grant(
    dataset: Annotated[str, typer.Argument(help="SHA-256 of the dataset.")],
    grantee: Annotated[str, typer.Argument(help="Account address of the grantee.")],
    scope: Annotated[str, typer.Option(help="What is granted, e.g. read-raw or read-images.")] = "read-raw",
    days: Annotated[float, typer.Option(help="Days until the grant expires.", min=0.0)] = 30.0,
) -> None:
    """Grant an account a scope on a dataset until an expiry (the dataset's site or the admin only)."""
    expiry = datetime.now(UTC) + timedelta(days=days)
    with _ledger() as ledger:
        tx_hash = ledger.grant(dataset, grantee, scope, expiry)
    out.print(f"granted {scope} on {dataset} to {grantee} until {expiry:%Y-%m-%d %H:%M} UTC (transaction {tx_hash})",
              highlight=False)


@ledger_app.command()
@reports_errors
def revoke(
    dataset: Annotated[str, typer.Argument(help="SHA-256 of the dataset.")],
    grantee: Annotated[str, typer.Argument(help="Account address of the grantee.")],
    scope: Annotated[str, typer.Option(help="The scope to revoke.")] = "read-raw",
) -> None:
    """Revoke a grant now."""
    with _ledger() as ledger:
        tx_hash = ledger.revoke(dataset, grantee, scope)
    out.print(f"revoked {scope} on {dataset} from {grantee} (transaction {tx_hash})", highlight=False)


@ledger_app.command()
@reports_errors
def grants(
    dataset: Annotated[str | None, typer.Argument(help="Only grants on this dataset (SHA-256).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List grants with their state (active, expired, revoked)."""
    with _ledger() as ledger:
        found = ledger.grants(dataset)
    if as_json:
        _json_out([asdict(g) for g in found])
        return
    table = Table(title="grants", title_justify="left")
    for column in ("dataset", "grantee", "scope", "expires", "state", "grantor"):
        table.add_column(column, no_wrap=column in {"dataset", "grantee", "grantor"}, overflow="fold")
    for g in found:
        state = "active" if g.active else "revoked" if g.revoked else "expired"
        table.add_row(g.dataset, g.grantee, g.scope, _when(g.expiry), state, g.grantor)
    out.print(table)


@ledger_app.command()
@reports_errors
def check() -> None:
    """Compare the anchors this site recorded with the chain (detects a replaced or reorganized chain)."""
    with _ledger() as ledger:
        report = ledger.check_chain()
        confirmed = len(ledger.queue.batches(("confirmed",)))
    if report.ok:
        out.print(f"chain consistent: {confirmed} anchored batches found on chain", highlight=False)
        return
    for problem in report.problems:
        err.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    err.print(f"{len(report.missing)} batches must be anchored again: run `cloudmri ledger reanchor`",
              highlight=False)
    raise typer.Exit(1)


@ledger_app.command()
@reports_errors
def reanchor(site: Annotated[str | None, typer.Option(help="Site to register after a redeployment.")] = None
             ) -> None:
    """Anchor again what the chain lost; after a replaced chain, redeploy the contracts first (admin)."""
    from cloudmri_kernel.ledger.config import ledger_settings

    with _ledger() as ledger:
        anchored = ledger.reanchor(site or ledger_settings().site_name)
    out.print(f"anchored {sum(a.count for a in anchored)} records again in {len(anchored)} transactions",
              highlight=False)
