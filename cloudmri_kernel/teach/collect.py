"""Collect students' own submissions of a tutorial from their home directories, through JupyterHub, for grading.

An instructor (the hub's ``instructors`` role, not an admin) reads each student's file the way JupyterLab does:
the hub finds (or starts) the student's server (:class:`~cloudmri_kernel.teach.hub.Hub`), and the server's
Jupyter contents API returns the file (``GET /user/NAME/api/contents/PATH``), with the instructor's hub token.
Each notebook is written atomically to
``OUT/STUDENT/``, its recorded values (:func:`~cloudmri_kernel.teach.records.read_records`) are read, and
``collected.csv`` and ``collected.html`` list every student: submitted (when, the file's ``last_modified``),
no submission, server not running, refused (with the hub's reason), unknown student, not a notebook, unreachable.

References:
    JupyterHub documentation, "JupyterHub REST API" and "JupyterHub RBAC" (scopes, filters), JupyterHub 5.
    Jupyter Server documentation, "Contents API" (``GET /api/contents/{path}``).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import httpx
import nbformat

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach.hub import (
    ACCESS_SCOPE,
    NOT_RUNNING,
    REFUSED,
    UNKNOWN,
    UNREACHABLE,
    Hub,
    ServerProblem,
    reason,
)
from cloudmri_kernel.teach.records import read_records
from cloudmri_kernel.teach.roster import read_roster
from cloudmri_kernel.teach.summary import REPORT_CSS, csv_value, record_names, shown_value
from cloudmri_kernel.teach.tutorials import Tutorial, find_tutorial, load_tutorial

#: Where a student saves a tutorial in their home, by default; ``{tutorial}`` is its file stem.
DEFAULT_PATH = "submissions/{tutorial}.ipynb"
SUBMITTED, MISSING, NOT_NOTEBOOK = "submitted", "no submission", "not a notebook"
STATUSES = (SUBMITTED, MISSING, NOT_RUNNING, REFUSED, UNKNOWN, NOT_NOTEBOOK, UNREACHABLE)
FIXED_COLUMNS = ("student", "status", "modified", "detail", "notebook")


@dataclass(frozen=True)
class Submission:
    """What was collected from one student.

    Attributes:
        student: the hub user name (the roster's ``student`` cell).
        status: one of :data:`STATUSES`.
        detail: why, for every status but ``submitted``: the hub's or the server's reason and what to do.
        modified: the file's ``last_modified`` on the student's server (ISO 8601), when there is a file.
        notebook: the saved copy, for ``submitted``.
        records: the values the student's exercises recorded.
    """

    student: str
    status: str
    detail: str = ""
    modified: str | None = None
    notebook: Path | None = None
    records: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    """A class's submissions of one tutorial and where they were written."""

    tutorial: Tutorial
    path: str
    out_dir: Path
    submissions: list[Submission]
    csv_path: Path
    html_path: Path

    @property
    def incomplete(self) -> list[Submission]:
        """Every student whose notebook was not collected."""
        return [s for s in self.submissions if s.status != SUBMITTED]


def submission_path(template: str, tutorial: Tutorial) -> str:
    """The path of a submission in a home, from a template with ``{tutorial}`` (the tutorial's file stem).

    Raises:
        UsageError: an unknown placeholder, or a path that is absolute or leaves the home (``..``).
    """
    try:
        path = template.format(tutorial=tutorial.path.stem)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"--path '{template}': only {{tutorial}} can be filled in ({exc!r})") from None
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts:
        raise UsageError(f"--path '{path}' must be relative to a student's home, without '..', "
                         f"e.g. '{DEFAULT_PATH}'")
    return PurePosixPath(path).as_posix()


def read_notebook(data: bytes) -> nbformat.NotebookNode:
    """A submitted file as a valid notebook (version 4, older ones converted).

    Raises:
        ValueError: the file is not UTF-8 JSON of a notebook, or does not follow the nbformat schema; the message
            says which, in one line.
    """
    try:
        content = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not UTF-8 JSON: {exc}") from None
    if not isinstance(content, dict) or not isinstance(content.get("nbformat"), int):
        raise ValueError("JSON without an nbformat version")
    try:
        notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
    # nbformat assumes the schema's types while it reads and normalizes: a cell that is a number or a source that
    # is not text raises TypeError, AttributeError or KeyError before any ValidationError
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, nbformat.ValidationError) as exc:
        raise ValueError((str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]) from None
    return notebook


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def _fetch(hub: Hub, student: str, server_url: str, path: str, saved: Path) -> Submission:
    """Read ``path`` through the student's contents API, check it is a notebook, save it as ``saved``, read its
    records."""
    reply = hub.http.get(f"{server_url}api/contents/{quote(path)}", params={"type": "file", "content": "1"})
    if reply.status_code == 404:
        return Submission(student, MISSING, f"no {path} in {student}'s home")
    if reply.status_code in (401, 403):
        return Submission(student, REFUSED, f"{student}'s server refused the token ({reason(reply)}): reading "
                          f"a student's files needs {ACCESS_SCOPE}")
    if reply.status_code == 400:
        return Submission(student, NOT_NOTEBOOK, f"{path} in {student}'s home cannot be read as a file "
                          f"({reason(reply)})")
    if reply.status_code != 200:
        return Submission(student, UNREACHABLE, f"{student}'s server answered {reason(reply)}")
    model = reply.json()
    modified = model.get("last_modified")
    content = model.get("content") or ""
    data = base64.b64decode(content) if model.get("format") == "base64" else content.encode("utf-8")
    try:
        notebook = read_notebook(data)
    except ValueError as exc:
        return Submission(student, NOT_NOTEBOOK, f"{path} in {student}'s home is not a Jupyter notebook "
                          f"({exc})", modified)
    _write_atomically(saved, data)
    return Submission(student, SUBMITTED, "", modified, saved, read_records(notebook))


def collect_class(tutorial: str | Path, roster: str | Path, hub_url: str, token: str | None,
                  path_template: str = DEFAULT_PATH, out_dir: str | Path | None = None,
                  start_servers: bool = False, start_timeout: float = 180.0, timeout: float = 60.0,
                  progress: Callable[[int, int, Submission], None] | None = None) -> Collection:
    """Collect each student's submission of ``tutorial`` through the hub and write ``collected.csv``/``.html``.

    Args:
        tutorial: a tutorial's name or a notebook's path (its stem fills ``{tutorial}`` in ``path_template``).
        roster: the class roster; its ``student`` column holds hub user names.
        hub_url: the hub's public URL, e.g. ``http://127.0.0.1:8000``.
        token: an instructor's hub API token.
        path_template: the submission's path in each home.
        out_dir: where notebooks and the summary go (default ``out/collect/TUTORIAL``).
        start_servers: start servers that are not running (needs
            :data:`~cloudmri_kernel.teach.hub.START_SCOPE`) instead of reporting them.
        start_timeout: seconds to wait for a server to become ready.
        timeout: seconds one HTTP request may take.
        progress: called after each student with (done, total, submission).

    Raises:
        UsageError: a bad roster (no ``student`` column, …), path or token, or an unreachable hub; nothing was
            fetched.
    """
    found = load_tutorial(find_tutorial(tutorial))
    students = read_roster(roster, found)
    path = submission_path(path_template, found)
    if not token:
        raise UsageError("no hub token: give --token-file or set JUPYTERHUB_API_TOKEN to an instructor's token "
                         "(hub → Token page)")
    target = Path(out_dir) if out_dir is not None else Path("out") / "collect" / found.path.stem
    hub = Hub(hub_url, token, timeout)
    try:
        hub.check_token(start_servers, "collecting", "nothing was read")
        target.mkdir(parents=True, exist_ok=True)
        submissions: list[Submission] = []
        for student in students:
            try:
                server = hub.server(student.name, start_servers, start_timeout)
                submission = (Submission(student.name, server.status, server.detail)
                              if isinstance(server, ServerProblem) else
                              _fetch(hub, student.name, server, path, target / student.slug / PurePosixPath(path).name))
            except httpx.TransportError as exc:
                submission = Submission(student.name, UNREACHABLE, f"no answer for {student.name} ({exc!r})")
            except json.JSONDecodeError as exc:
                submission = Submission(student.name, UNREACHABLE, f"a reply for {student.name} was not JSON "
                                        f"({exc})")
            submissions.append(submission)
            if progress is not None:
                progress(len(submissions), len(students), submission)
    finally:
        hub.close()
    csv_path, html_path = write_collected(found, path, submissions, target)
    return Collection(found, path, target, submissions, csv_path, html_path)


def rows(submissions: list[Submission], out_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The table of ``collected.csv``: column names and one row (column: text) per student."""
    records = record_names(submissions)
    columns = [*FIXED_COLUMNS, *(f"record:{name}" for name in records)]
    table = []
    for s in submissions:
        notebook = "" if s.notebook is None else Path(os.path.relpath(s.notebook, out_dir)).as_posix()
        row = {"student": s.student, "status": s.status, "modified": s.modified or "", "detail": s.detail,
               "notebook": notebook}
        row.update({f"record:{name}": csv_value(s.records.get(name)) for name in records})
        table.append(row)
    return columns, table


_STATUS_CSS = """
.submitted { background: #2e7d32; } .no-submission { background: #ef6c00; } .not-a-notebook { background: #c62828; }
"""


def _when(modified: str | None) -> str:
    """An ISO 8601 time from a server as people read it, in UTC to the second."""
    if not modified:
        return ""
    try:
        return datetime.fromisoformat(modified).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return modified


def _html(tutorial: Tutorial, path: str, submissions: list[Submission], out_dir: Path) -> str:
    escape = html.escape
    records = record_names(submissions)
    _, table = rows(submissions, out_dir)
    counts = "".join(f"<span>{sum(s.status == status for s in submissions)} {status}</span>" for status in STATUSES
                     if any(s.status == status for s in submissions))
    head = "<th rowspan=2>Student</th><th rowspan=2>Status</th><th rowspan=2>Saved (last modified)</th>" \
           "<th rowspan=2>Why not collected</th>"
    if records:
        head += f'<th class="group" colspan={len(records)}>Recorded values</th>'
    sub = "".join(f"<th>{escape(name).replace('_', '_<wbr>')}</th>" for name in records)
    body = []
    for s, row in zip(submissions, table, strict=True):
        name = escape(s.student)
        link = f'<a href="{escape(row["notebook"])}">{name}</a>' if row["notebook"] else name
        values = "".join(f'<td class="num">{escape(shown_value(s.records.get(n)))}</td>' for n in records)
        body.append(f'<tr class="{"" if s.status == SUBMITTED else "bad"}"><td>{link}</td>'
                    f'<td><span class="status {s.status.replace(" ", "-")}">{escape(s.status)}</span></td>'
                    f'<td class="num">{escape(_when(s.modified))}</td>'
                    f'<td class="where"><div class="error">{escape(s.detail)}</div></td>{values}</tr>')
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(tutorial.title)}: "
            f"submissions</title><style>{REPORT_CSS}{_STATUS_CSS}</style></head><body>\n"
            f"<h1>{escape(tutorial.title)}: submissions</h1>\n"
            f"<p class=meta><code>~/{escape(path)}</code> &middot; {len(submissions)} students &middot; collected "
            f"{when}</p>\n<p class=counts>{counts}</p>\n"
            f"<table><thead><tr>{head}</tr><tr>{sub}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody></table>\n<p class=meta>Times are the files' last modification on the students' servers; "
            "click a name to open the collected notebook.</p>\n</body></html>\n")


def write_collected(tutorial: Tutorial, path: str, submissions: list[Submission],
                    out_dir: Path) -> tuple[Path, Path]:
    """Write ``collected.csv`` and ``collected.html`` into ``out_dir``; returns their paths."""
    columns, table = rows(submissions, out_dir)
    csv_path, html_path = out_dir / "collected.csv", out_dir / "collected.html"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    html_path.write_text(_html(tutorial, path, submissions, out_dir), encoding="utf-8")
    return csv_path, html_path
