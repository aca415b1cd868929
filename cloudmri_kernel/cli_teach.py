"""``cloudmri teach``: run a tutorial for a whole class, collect students' submissions, list the tutorials.

``teach run`` exits 0 when every student's notebook ran, 1 when some failed, timed out or (with ``--hub``) could
not run in the student's server (the summary says who, where and why), and 2 when nothing could run (a bad
roster, parameters file, tutorial, option or token). ``teach collect`` exits 0 when every student's submission
was collected, 1 when some were not (the summary says why), and 2 when nothing was read (a bad roster, path or
token, or no hub at the URL).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloudmri_kernel.cli import _progress, app, err, out, reports_errors

teach_app = typer.Typer(help="Course tutorials: run one for a whole class, collect submissions, list them.",
                        no_args_is_help=True)
app.add_typer(teach_app, name="teach")

_STYLES = {"ok": "green", "failed": "red", "timeout": "yellow", "not running": "yellow"}


def _hub_token(token_file: Path | None) -> str | None:
    """An instructor's hub token: from ``--token-file`` (mode 0600), else JUPYTERHUB_API_TOKEN."""
    from cloudmri_kernel.client import read_token_file

    return read_token_file(token_file) if token_file is not None else os.environ.get("JUPYTERHUB_API_TOKEN")


@teach_app.command("run")
@reports_errors
def teach_run(
    tutorial: Annotated[str, typer.Argument(help="Tutorial name (see `cloudmri teach list`) or notebook path.")],
    roster: Annotated[Path, typer.Option("--class", help="Roster CSV: a 'student' column and parameter columns.")],
    params: Annotated[Path | None, typer.Option("--params", help="YAML parameters for the whole class; the "
                                                "roster's cells win.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: out/teach/TUTORIAL).")]
    = None,
    parallel: Annotated[int, typer.Option(min=1, help="Students run at the same time.")] = 1,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds one cell may run before the student's run "
                                           "stops as a timeout.")] = 600.0,
    kernel: Annotated[str | None, typer.Option(help="Jupyter kernel (default: the notebook's own; on the hub the "
                                               "Cloud-MRI kernel where a server has it).")] = None,
    hub_url: Annotated[str | None, typer.Option("--hub", "--hub-url", help="Run on this JupyterHub, in each "
                                                "student's own server (the roster's students are hub users).")]
    = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="With --hub: file (mode 0600) with an "
                                                    "instructor's hub API token (default: JUPYTERHUB_API_TOKEN).")]
    = None,
    start_servers: Annotated[bool, typer.Option("--start-servers", help="With --hub: start the servers of students "
                                                "that are not running (the token needs servers!group=students).")]
    = False,
) -> None:
    """Execute a tutorial once per student, locally (papermill) or with --hub in each student's own server, and
    write the notebooks, summary.csv and summary.html."""
    from cloudmri_kernel.errors import UsageError
    from cloudmri_kernel.teach.tutorials import find_tutorial

    if hub_url is None and (token_file is not None or start_servers):
        raise UsageError("--token-file and --start-servers are for runs on the hub: add --hub URL")
    target = out_dir if out_dir is not None else Path("out") / "teach" / find_tutorial(tutorial).stem
    with _progress() as bar:
        task = bar.add_task(f"running {tutorial}", total=None)

        def report(done: int, total: int, result) -> None:
            bar.update(task, completed=done, total=total, description=f"{result.student}: {result.status}")

        if hub_url is None:
            from cloudmri_kernel.teach.runner import run_class

            run = run_class(tutorial, roster, params, out_dir=target, parallel=parallel, cell_timeout=timeout,
                            kernel_name=kernel, progress=report)
        else:
            from cloudmri_kernel.teach.hub_runner import run_class_on_hub

            run = run_class_on_hub(tutorial, roster, params, hub_url=hub_url, token=_hub_token(token_file),
                                   out_dir=target, parallel=parallel, cell_timeout=timeout, kernel_name=kernel,
                                   start_servers=start_servers, progress=report)
    table = Table(title=f"{run.tutorial.title} ({len(run.results)} students)", title_justify="left")
    for column in ("student", "status", "cell", "error", "seconds"):
        table.add_column(column, overflow="fold")
    for result in run.results:
        table.add_row(result.student, f"[{_STYLES.get(result.status, 'red')}]{result.status}[/]",
                      "" if result.cell is None else str(result.cell), result.error or "", f"{result.seconds:.1f}")
    out.print(table)
    out.print(f"notebooks in {run.out_dir / 'notebooks'}; summary {run.summary_html} and {run.summary_csv}",
              highlight=False, soft_wrap=True)
    if run.failed:
        err.print(f"[bold red]{len(run.failed)} of {len(run.results)} students' notebooks did not run through[/]: "
                  + ", ".join(f"{r.student} ({r.status})" for r in run.failed), highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@teach_app.command("list")
@reports_errors
def teach_list(
    directory: Annotated[Path | None, typer.Option("--dir", help="Folder of tutorials (default: the workbench's "
                                                   "notebooks/tutorials).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tutorials and their parameters (name, type, default, help)."""
    from cloudmri_kernel.teach.tutorials import TUTORIALS_DIR, list_tutorials

    tutorials = list_tutorials(directory or TUTORIALS_DIR)
    if as_json:
        sys.stdout.write(json.dumps([
            {"name": t.name, "title": t.title, "path": str(t.path),
             "parameters": [{"name": p.name, "type": p.type, "default": p.default, "help": p.help}
                            for p in t.parameters.values()]}
            for t in tutorials], indent=2) + "\n")
        return
    if not tutorials:
        out.print(f"no tutorials in {directory or TUTORIALS_DIR}", highlight=False)
        return
    for t in tutorials:
        table = Table(title=f"{t.name}: {t.title}", title_justify="left")
        for column in ("parameter", "type", "default", "help"):
            table.add_column(column, overflow="fold")
        for p in t.parameters.values():
            table.add_row(p.name, p.type or "?", p.default, p.help)
        out.print(table)


_COLLECT_STYLES = {"submitted": "green", "no submission": "yellow", "not running": "yellow"}


@teach_app.command("collect")
@reports_errors
def teach_collect(
    tutorial: Annotated[str, typer.Argument(help="Tutorial name (see `cloudmri teach list`) or notebook path.")],
    roster: Annotated[Path, typer.Option("--class", help="Roster CSV whose 'student' column holds hub user "
                                         "names.")],
    hub_url: Annotated[str, typer.Option("--hub-url", envvar="CLOUDMRI_HUB_URL", help="The hub's public URL.")]
    = "http://127.0.0.1:8000",
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File (mode 0600) with an instructor's hub "
                                                    "API token (default: JUPYTERHUB_API_TOKEN).")] = None,
    path: Annotated[str, typer.Option("--path", help="The submission's path in each student's home; {tutorial} is "
                                      "the tutorial's file stem.")] = "submissions/{tutorial}.ipynb",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: out/collect/TUTORIAL).")]
    = None,
    start_servers: Annotated[bool, typer.Option("--start-servers", help="Start the servers of students that are "
                                                "not running (the token needs servers!group=students).")] = False,
) -> None:
    """Collect each student's submission through JupyterHub and write the notebooks, collected.csv and .html."""
    from cloudmri_kernel.teach.collect import collect_class

    token = _hub_token(token_file)
    with _progress() as bar:
        task = bar.add_task(f"collecting {tutorial}", total=None)

        def report(done: int, total: int, submission) -> None:
            bar.update(task, completed=done, total=total, description=f"{submission.student}: {submission.status}")

        collection = collect_class(tutorial, roster, hub_url, token, path, out_dir, start_servers=start_servers,
                                   progress=report)
    table = Table(title=f"{collection.tutorial.title}: ~/{collection.path} ({len(collection.submissions)} "
                  "students)", title_justify="left")
    for column in ("student", "status", "modified", "detail"):
        table.add_column(column, overflow="fold")
    for s in collection.submissions:
        table.add_row(s.student, f"[{_COLLECT_STYLES.get(s.status, 'red')}]{s.status}[/]", s.modified or "",
                      s.detail)
    out.print(table)
    out.print(f"notebooks in {collection.out_dir}; summary {collection.html_path} and {collection.csv_path}",
              highlight=False, soft_wrap=True)
    if collection.incomplete:
        err.print(f"[bold red]{len(collection.incomplete)} of {len(collection.submissions)} students' notebooks "
                  "were not collected[/]: " + ", ".join(f"{s.student} ({s.status})" for s in collection.incomplete),
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)
