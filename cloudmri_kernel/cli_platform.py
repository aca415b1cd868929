"""``cloudmri`` commands of the data platform: the API service, its tokens and store, and the client side
(upload, ls, get, job, grant, audit). Client commands talk to the service over HTTP with the caller's token;
``service`` and ``store`` run where the service's data directory is.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloudmri_kernel.cli import _progress, app, err, out, reports_errors
from cloudmri_kernel.errors import UsageError

service_app = typer.Typer(help="Run the Cloud-MRI API service and manage its local tokens.")
token_app = typer.Typer(help="Local tokens (stand-alone mode; inside JupyterHub the hub issues tokens).",
                        no_args_is_help=True)
store_app = typer.Typer(help="The encrypted object store (run where the service's data directory is).",
                        no_args_is_help=True)
job_app = typer.Typer(help="Reconstruction jobs run by the service.", no_args_is_help=True)
grant_app = typer.Typer(help="Grants: let a user or another site read a dataset until a date.",
                        no_args_is_help=True)
app.add_typer(service_app, name="service")
service_app.add_typer(token_app, name="token")
app.add_typer(store_app, name="store")
app.add_typer(job_app, name="job")
app.add_typer(grant_app, name="grant")


class Role(StrEnum):
    researcher = "researcher"
    radiologist = "radiologist"
    instructor = "instructor"
    admin = "admin"


class Scope(StrEnum):
    read_raw = "read-raw"
    read_images = "read-images"


def _client():
    from cloudmri_kernel.client import Client

    return Client()


def _json_out(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if column.endswith("_at") or column == "timestamp":
        return str(value)[:19].replace("T", " ")  # to the second, in UTC as the service gives it
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:  # IDs are what people copy into the next command: never cut them
        table.add_column(column.removesuffix("_t").replace("_", " "), no_wrap=column.endswith("id"),
                         overflow="fold")
    for row in rows:
        table.add_row(*(_cell(c, row.get(c)) for c in columns))
    out.print(table)


@service_app.callback(invoke_without_command=True)
@reports_errors
def service(
    ctx: typer.Context,
    local: Annotated[bool, typer.Option("--local", help="Stand-alone: check local tokens instead of asking "
                                        "JupyterHub.")] = False,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless a proxy is in front.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    workers: Annotated[int, typer.Option(min=0, help="Dask worker processes (a LocalCluster started at the first "
                                         "job) for reconstruction; 0 runs jobs in the service process. Ignored "
                                         "when CLOUDMRI_DASK_SCHEDULER or _GATEWAY is set.")] = 2,
) -> None:
    """Start the Cloud-MRI API service (Ctrl-C stops it)."""
    if ctx.invoked_subcommand is not None:
        return
    import os

    from cloudmri_kernel.config import settings
    from cloudmri_kernel.service.app import run

    config = settings()
    if local:
        config = config.model_copy(update={"hub_api_url": None})
        os.environ.pop("JUPYTERHUB_API_URL", None)
    elif not (config.hub_api_url or os.environ.get("JUPYTERHUB_API_URL")):
        raise UsageError("no JupyterHub to check tokens with (CLOUDMRI_HUB_API_URL or JUPYTERHUB_API_URL): "
                         "run 'cloudmri service --local' to use local tokens")
    err.print(f"Cloud-MRI API on http://{host}:{port} (OpenAPI spec: /openapi.json), data in {config.data_dir}",
              highlight=False)
    run(host, port, config, recon_workers=workers or None)


@token_app.command("create")
@reports_errors
def token_create(
    user: Annotated[str, typer.Option(help="Who the token is for.")],
    site: Annotated[str, typer.Option(help="The user's site.")],
    role: Annotated[list[Role], typer.Option(help="Role(s) whose scopes the token gets.")] = (),
    scope: Annotated[list[str], typer.Option(help="Extra scope(s), e.g. read-raw.")] = (),
    expires_days: Annotated[float | None, typer.Option(min=0.0, help="Days until it expires (default: never).")]
    = None,
    save: Annotated[bool, typer.Option("--save", help="Also write it to DATA_DIR/client/token (mode 0600), "
                                       "where the client looks by default.")] = False,
) -> None:
    """Issue a local token (printed once; the service keeps only its hash)."""
    from cloudmri_kernel.service.identity import ROLE_SCOPES
    from cloudmri_kernel.service.state import local_tokens

    scopes = sorted({s for r in role for s in ROLE_SCOPES[r.value]} | set(scope))
    if not scopes:
        raise UsageError("give at least one --role or --scope")
    expires = timedelta(days=expires_days) if expires_days is not None else None
    token = local_tokens().create(user, site, scopes, expires)
    if save:
        from cloudmri_kernel.client import save_token

        path = save_token(token)
        err.print(f"saved to {path}", highlight=False)
    out.print(token, highlight=False)
    err.print(f"token for {user} at site {site}: {', '.join(scopes)}", highlight=False)


@store_app.command("verify")
@reports_errors
def store_verify(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Re-hash every stored object (integrity scrub); exit 1 if any is damaged."""
    from cloudmri_kernel.store import ObjectStore

    with _progress() as bar:
        task = bar.add_task("verifying objects", total=None)
        report = ObjectStore.from_settings().verify(
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        _json_out({"checked": report.checked, "damaged": [list(d) for d in report.damaged],
                   "orphans": report.orphans})
    else:
        out.print(f"checked {report.checked} object(s): {len(report.damaged)} damaged, {len(report.orphans)} "
                  "orphaned temporary file(s)", highlight=False)
        for site, sha, reason in report.damaged:
            out.print(f"DAMAGED {site}/{sha}: {reason}", highlight=False)
    if report.damaged:
        raise typer.Exit(1)


@store_app.command("rotate-key")
@reports_errors
def store_rotate(site: Annotated[str, typer.Option(help="Site whose key-encryption key is rotated.")]) -> None:
    """New key-encryption key for a site; re-wraps every data key (the data is not re-encrypted)."""
    from cloudmri_kernel.store import ObjectStore

    count = ObjectStore.from_settings().rotate(site)
    out.print(f"re-wrapped {count} data key(s) of site {site}", highlight=False)


@app.command()
@reports_errors
def upload(
    files: Annotated[list[Path], typer.Argument(help="MRD raw file(s) (convert others with cloudmri ingest).")],
    anonymize: Annotated[bool, typer.Option("--anonymize", help="De-identify locally before anything is sent.")]
    = False,
    policy: Annotated[Path | None, typer.Option(help="De-identification policy YAML (with --anonymize).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the datasets as JSON.")] = False,
) -> None:
    """Upload raw files to your site through the API service (chunked, resumable, hash-checked)."""
    from cloudmri_kernel.mrd.anonymize import AnonymizationPolicy, anonymize_file

    client, results = _client(), []
    with client, tempfile.TemporaryDirectory() as scratch, _progress() as bar:
        site = client.whoami()["site"]
        for path in files:
            sent = path
            if anonymize:
                sent = Path(scratch) / path.name
                rules = AnonymizationPolicy.from_file(policy) if policy else AnonymizationPolicy()
                anonymize_file(path, sent, site=site, policy=rules)
            task = bar.add_task(f"uploading {path.name}", total=sent.stat().st_size)
            dataset = client.upload(sent, progress=lambda done, total, t=task: bar.update(t, completed=done),
                                    deidentified_with=("custom" if policy else "default") if anonymize else None)
            results.append(dataset)
            if not as_json:
                out.print(f"{path} -> dataset {dataset['id']} (site {dataset['site']}, sha256 "
                          f"{dataset['sha256'][:12]}…)", highlight=False)
    if as_json:
        _json_out(results)


@app.command("ls")
@reports_errors
def list_datasets(
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject pseudonym.")] = None,
    sequence: Annotated[str | None, typer.Option(help="Sequence type, e.g. TrueFISP.")] = None,
    field_strength: Annotated[float | None, typer.Option(help="Field strength in T.")] = None,
    text: Annotated[str | None, typer.Option(help="Part of the file name or protocol.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Acquired on or after (YYYY-MM-DD).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Acquired on or before (YYYY-MM-DD).")] = None,
    series: Annotated[str | None, typer.Option(help="List the series of this dataset instead.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the datasets you may see (or one dataset's reconstructed series)."""
    with _client() as client:
        if series is not None:
            rows = client.series_of(series)
            columns = ["id", "method", "shape", "created_by", "created_at"]
        else:
            aware = {k: v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v
                     for k, v in (("acquired_from", since), ("acquired_to", until))}
            rows = client.datasets(site=site, subject=subject, sequence=sequence, field_strength_t=field_strength,
                                   text=text, limit=limit, **aware)
            columns = ["id", "site", "filename", "sequence", "field_strength_t", "acquired_at", "subject"]
    if as_json:
        _json_out(rows)
    else:
        _table(rows, columns)


@app.command()
@reports_errors
def get(
    object_id: Annotated[str, typer.Argument(help="Dataset ID (raw file), or a series ID with --series.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (a directory with --png).")],
    series: Annotated[bool, typer.Option("--series", help="OBJECT_ID is a reconstructed series.")] = False,
    png: Annotated[bool, typer.Option("--png", help="With --series: every image as PNG into OUTPUT.")] = False,
) -> None:
    """Download a raw file or a series (checked against its SHA-256, written atomically)."""
    if png and not series:
        raise UsageError("--png needs --series")
    with _client() as client, _progress() as bar:
        task = bar.add_task(f"downloading {object_id}", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        if png:
            shape = client.series(object_id)["shape"]
            count = 1
            for size in shape[:-2]:
                count *= size
            output.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                (output / f"image_{index:03d}.png").write_bytes(client.image_png(object_id, index))
                report(index + 1, count)
            written = f"{count} PNG file(s) in {output}"
        else:
            path = (client.download_series if series else client.download_raw)(object_id, output, report)
            written = str(path)
    out.print(f"wrote {written}", highlight=False)


@job_app.command("submit")
@reports_errors
def job_submit(
    dataset_id: Annotated[str, typer.Argument(help="Dataset to reconstruct.")],
    method: Annotated[str | None, typer.Option(help="ifft|grappa|sense|cs-wavelet|cs-tv|nufft (default: from "
                                               "the header).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="YAML/JSON recipe.")] = None,
    lamda: Annotated[float | None, typer.Option("--lambda", help="Regularization weight.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until it finishes.")] = False,
) -> None:
    """Reconstruct a dataset on the service's Dask cluster; prints the job ID (and the series ID with --wait)."""
    from cloudmri_kernel.recon.recipe import load_recipe

    content = None
    if recipe is not None:
        content = load_recipe(recipe).model_dump(mode="json")
    elif method is not None or lamda is not None:
        if method is None:
            raise UsageError("--lambda needs --method (or a --recipe)")
        content = {"method": method, **({"lamda": lamda} if lamda is not None else {})}
    with _client() as client:
        job = client.submit(dataset_id, content)
        out.print(f"job {job['id']} queued", highlight=False)
        if not wait:
            return
        with _progress() as bar:
            task = bar.add_task("reconstructing", total=100)
            for state in client.watch(job["id"]):
                bar.update(task, completed=round(100 * state["progress"]), description=state["status"])
    if state["status"] != "done":
        raise UsageError(f"job {job['id']} {state['status']}: {state['error'] or ''}")
    out.print(f"job {job['id']} done: series {state['series_id']}", highlight=False)


@job_app.command("status")
@reports_errors
def job_status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One job's state."""
    with _client() as client:
        job = client.job(job_id)
    if as_json:
        _json_out(job)
    else:
        _table([job], ["id", "dataset_id", "status", "progress", "series_id", "error"])


@job_app.command("list")
@reports_errors
def job_list(status: Annotated[str | None, typer.Option()] = None,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Your jobs, newest first."""
    with _client() as client:
        rows = client.jobs(status=status)
    if as_json:
        _json_out(rows)
    else:
        _table(rows, ["id", "dataset_id", "status", "progress", "series_id", "created_at"])


@job_app.command("cancel")
@reports_errors
def job_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    with _client() as client:
        job = client.cancel(job_id)
    out.print(f"job {job_id}: {job['status']}", highlight=False)


@grant_app.command("create")
@reports_errors
def grant_create(
    dataset_id: str,
    scope: Annotated[Scope, typer.Option(help="What the grantee may read.")],
    days: Annotated[float, typer.Option(min=0.001, help="How long the grant lasts.")],
    to_user: Annotated[str | None, typer.Option(help="Grantee user.")] = None,
    to_site: Annotated[str | None, typer.Option(help="Grantee site (all its users with the scope).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the record).")] = "",
) -> None:
    """Grant a user or a site access to one of your site's datasets (site admins)."""
    if (to_user is None) == (to_site is None):
        raise UsageError("give exactly one of --to-user and --to-site")
    with _client() as client:
        grant = client.grant(dataset_id, scope.value, datetime.now(UTC) + timedelta(days=days), user=to_user,
                             site=to_site, reason=reason)
    out.print(f"grant {grant['id']}: {scope.value} on {dataset_id} to {to_user or 'site ' + to_site} until "
              f"{grant['expires_at']}", highlight=False)


@grant_app.command("list")
@reports_errors
def grant_list(dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
               all_: Annotated[bool, typer.Option("--all", help="Include expired and revoked grants.")] = False,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Grants to you or your site, and (admins) on your site's datasets."""
    with _client() as client:
        rows = client.grants(dataset, active=not all_)
    if as_json:
        _json_out(rows)
    else:
        _table(rows, ["id", "dataset_id", "grantee_user", "grantee_site", "scope", "expires_at", "revoked_at"])


@grant_app.command("revoke")
@reports_errors
def grant_revoke(grant_id: str) -> None:
    """Revoke a grant at once (it stays in the record)."""
    with _client() as client:
        grant = client.revoke(grant_id)
    out.print(f"grant {grant_id} revoked at {grant['revoked_at']}", highlight=False)


@app.command()
@reports_errors
def audit(
    user: Annotated[str | None, typer.Option()] = None,
    action: Annotated[str | None, typer.Option(help="e.g. download_raw, create_grant.")] = None,
    outcome: Annotated[str | None, typer.Option(help="success or failure.")] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="YYYY-MM-DD[THH:MM:SS] (UTC).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The audit log, newest first (admins)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with _client() as client:
        rows = client.audit(user=user, action=action, outcome=outcome, dataset_id=dataset, since=since,
                            limit=limit)
    if as_json:
        _json_out(rows)
    else:
        _table(rows, ["timestamp", "user", "action", "status_code", "dataset_id", "reason"])


@app.command()
@reports_errors
def up(
    demo: Annotated[bool, typer.Option("--demo", help="Demo accounts (one per role) and demo datasets.")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Where people open the workbench.")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="All state: hub, catalog, store, keys, audit "
                                                  "(default CLOUDMRI_DATA_DIR).")] = None,
    ip: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless a TLS proxy is in front.")]
    = "127.0.0.1",
) -> None:
    """Start the multi-user workbench: JupyterHub, its proxy and the Cloud-MRI API service (Ctrl-C stops)."""
    import signal as signals

    from cloudmri_kernel.config import settings
    from cloudmri_kernel.up import start

    directory = (data_dir or settings().data_dir).expanduser().resolve()
    err.print(f"starting the workbench in {directory} …", highlight=False)
    workbench = start(directory, port=port, demo=demo, ip=ip)
    # Ctrl-C and SIGTERM stop everything, even when a shell started us in the background with SIGINT ignored
    for signal_number in (signals.SIGINT, signals.SIGTERM):
        signals.signal(signal_number, signals.default_int_handler)
    out.print(f"Cloud-MRI Workbench: {workbench.url}/", highlight=False)
    if demo:
        for name, password in workbench.demo_passwords.items():
            out.print(f"  {name:<12} password {password}", highlight=False)
    else:
        out.print("  first start: sign up as 'admin' at /hub/signup (approved automatically); others sign up and "
                  "an admin approves them at /hub/authorize", highlight=False)
    out.print("Ctrl-C stops it; `cloudmri up` on the same data directory resumes.", highlight=False)
    sys.stdout.flush()
    try:
        code = workbench.hub.wait()
        workbench.stop()  # the hub ended by itself: stop what it leaves behind (the ledger node)
    except KeyboardInterrupt:
        err.print("stopping …", highlight=False)
        workbench.stop()
        code = 0
    if code:
        raise UsageError(f"JupyterHub exited with status {code}; see {workbench.hub_dir / 'jupyterhub.log'}")
