"""Collect students' own submissions of a tutorial from their home directories, through JupyterHub, for grading.

An instructor (the hub's ``instructors`` role, not an admin) reads each student's file the way JupyterLab does:
the hub's REST API says whether the student's server runs (``GET /hub/api/users/NAME``, or starts it with
``POST /hub/api/users/NAME/server``), and the server's Jupyter contents API returns the file
(``GET /user/NAME/api/contents/PATH``), both with the instructor's hub token. The role's scopes limit this to the
class: ``read:users!group=students``, ``servers!group=students`` (start and stop) and
``access:servers!group=students`` (talk to the servers). Each notebook is written atomically to
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urljoin

import httpx
import nbformat

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach.records import read_records
from cloudmri_kernel.teach.roster import read_roster
from cloudmri_kernel.teach.summary import _CSS, _csv_value, _records, _shown
from cloudmri_kernel.teach.tutorials import Tutorial, find_tutorial, load_tutorial

#: Where a student saves a tutorial in their home, by default; ``{tutorial}`` is its file stem.
DEFAULT_PATH = "submissions/{tutorial}.ipynb"
#: The scopes that collecting needs, as the instructors' role grants them (hub_config/roles.py).
READ_SCOPE = "read:users!group=students"
ACCESS_SCOPE = "access:servers!group=students"
START_SCOPE = "servers!group=students"

SUBMITTED, MISSING, NOT_RUNNING = "submitted", "no submission", "not running"
REFUSED, UNKNOWN, NOT_NOTEBOOK, UNREACHABLE = "refused", "unknown student", "not a notebook", "unreachable"
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


def _reason(reply: httpx.Response) -> str:
    """The message of a hub or Jupyter error reply (both send ``{"message": ...}``), else the start of its body."""
    try:
        message = reply.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{reply.status_code} {message or reply.reason_phrase or reply.text[:200]}".strip()


def _reaches_others(scope_filter: str, owner: str) -> bool:
    """Whether a scope with this filter (``group=students``, ``user=ana``, empty: none) covers others' servers."""
    return scope_filter != f"user={owner}" and not scope_filter.startswith(f"server={owner}/")


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


def _server_url(hub_url: str, server: dict) -> str:
    """A server model's URL, absolute (a path under the hub's host, or a full URL with subdomains), ending in /."""
    return urljoin(hub_url, server["url"]).rstrip("/") + "/"


class _Hub:
    """The hub's REST API and the students' servers behind it, with one token."""

    def __init__(self, url: str, token: str, timeout: float):
        self.url = url.rstrip("/") + "/"
        self.http = httpx.Client(headers={"Authorization": f"token {token}"}, timeout=timeout)

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.http.request(method, f"{self.url}hub/api/{path}", **kwargs)

    def check_token(self, start_servers: bool) -> None:
        """Refuse, before any student is read, a token the hub does not accept or that lacks a scope needed."""
        try:
            reply = self.api("GET", "user")
        except httpx.TransportError as exc:
            raise UsageError(f"cannot reach JupyterHub at {self.url} ({exc}): check --hub-url") from None
        if reply.status_code == 404:
            raise UsageError(f"no JupyterHub API at {self.url}hub/api/ (404): check --hub-url")
        if reply.status_code != 200:
            raise UsageError(f"JupyterHub at {self.url} refused the token ({_reason(reply)}): give an instructor's "
                             "token (hub → Token page) with --token-file or JUPYTERHUB_API_TOKEN")
        try:
            model = reply.json()
        except json.JSONDecodeError:
            raise UsageError(f"{self.url} answered /hub/api/user with something that is not JSON: is it "
                             "JupyterHub? check --hub-url") from None
        owner = model.get("name", "?")
        # Everyone's token has "self", which expands to these scopes filtered to the owner's own servers; only
        # scopes that reach other users' servers (unfiltered, by group, by another user) can collect.
        scopes = {scope.partition("!")[0] for scope in model.get("scopes", [])
                  if _reaches_others(scope.partition("!")[2], owner)}
        needed = [(ACCESS_SCOPE, "access:servers")]
        if start_servers:
            needed.append((START_SCOPE, "servers"))
        missing = [scope for scope, base in needed if base not in scopes]
        if missing:
            raise UsageError(f"the token of {owner} lacks the scope {' and '.join(missing)}, which "
                             "collecting needs (the instructors' role has it): nothing was read")

    def server(self, student: str, start: bool, start_timeout: float) -> tuple[str | None, Submission | None]:
        """The URL of the student's running server, or the submission that says why there is none."""
        name = quote(student, safe="")
        reply = self.api("GET", f"users/{name}")
        if reply.status_code == 404:
            return None, Submission(student, UNKNOWN, f"the hub has no user {student} that this token may see "
                                    f"({_reason(reply)}): check the roster, and that {student} is in the "
                                    "students group")
        if reply.status_code == 403:
            return None, Submission(student, REFUSED, f"the hub refused to show {student} ({_reason(reply)}): the "
                                    f"token needs {READ_SCOPE}")
        if reply.status_code != 200:
            return None, Submission(student, UNREACHABLE, f"the hub answered {_reason(reply)} for {student}")
        model = reply.json()
        if "servers" not in model:  # list:users shows every name; only read:users!group=… shows servers
            return None, Submission(student, REFUSED, f"the hub shows {student}'s name but not their servers to "
                                    f"this token ({READ_SCOPE} covers the class): is {student} in the students "
                                    "group?")
        server = model["servers"].get("")
        if server and server.get("ready"):
            return _server_url(self.url, server), None
        if not start:
            state = "is starting" if server else "is not running"
            return None, Submission(student, NOT_RUNNING, f"{student}'s server {state}: start it "
                                    "(--start-servers) or ask the student to")
        if not server:
            started = self.api("POST", f"users/{name}/server", json={})
            if started.status_code not in (201, 202):
                status = REFUSED if started.status_code == 403 else NOT_RUNNING
                return None, Submission(student, status, f"the hub did not start {student}'s server "
                                        f"({_reason(started)}); starting needs {START_SCOPE}")
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            server = self.api("GET", f"users/{name}").json().get("servers", {}).get("")
            if not server:
                return None, Submission(student, NOT_RUNNING, f"{student}'s server stopped while starting: see "
                                        "the hub's log")
            if server.get("ready"):
                return _server_url(self.url, server), None
            time.sleep(0.5)
        return None, Submission(student, NOT_RUNNING, f"{student}'s server was not ready within "
                                f"{start_timeout:.0f} s")

    def fetch(self, student: str, server_url: str, path: str, saved: Path) -> Submission:
        """Read ``path`` through the student's contents API, check it is a notebook, save it as ``saved``, read its
        records."""
        reply = self.http.get(f"{server_url}api/contents/{quote(path)}", params={"type": "file", "content": "1"})
        if reply.status_code == 404:
            return Submission(student, MISSING, f"no {path} in {student}'s home")
        if reply.status_code in (401, 403):
            return Submission(student, REFUSED, f"{student}'s server refused the token ({_reason(reply)}): reading "
                              f"a student's files needs {ACCESS_SCOPE}")
        if reply.status_code == 400:
            return Submission(student, NOT_NOTEBOOK, f"{path} in {student}'s home cannot be read as a file "
                              f"({_reason(reply)})")
        if reply.status_code != 200:
            return Submission(student, UNREACHABLE, f"{student}'s server answered {_reason(reply)}")
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

    def close(self) -> None:
        self.http.close()


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
        start_servers: start servers that are not running (needs :data:`START_SCOPE`) instead of reporting them.
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
    hub = _Hub(hub_url, token, timeout)
    try:
        hub.check_token(start_servers)
        target.mkdir(parents=True, exist_ok=True)
        submissions: list[Submission] = []
        for student in students:
            try:
                server_url, problem = hub.server(student.name, start_servers, start_timeout)
                submission = problem or hub.fetch(student.name, server_url, path,
                                                  target / student.slug / PurePosixPath(path).name)
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
    records = _records(submissions)
    columns = [*FIXED_COLUMNS, *(f"record:{name}" for name in records)]
    table = []
    for s in submissions:
        notebook = "" if s.notebook is None else Path(os.path.relpath(s.notebook, out_dir)).as_posix()
        row = {"student": s.student, "status": s.status, "modified": s.modified or "", "detail": s.detail,
               "notebook": notebook}
        row.update({f"record:{name}": _csv_value(s.records.get(name)) for name in records})
        table.append(row)
    return columns, table


_STATUS_CSS = """
.submitted { background: #2e7d32; } .no-submission { background: #ef6c00; } .not-running { background: #6d4c41; }
.refused, .unknown-student, .not-a-notebook, .unreachable { background: #c62828; }
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
    records = _records(submissions)
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
        values = "".join(f'<td class="num">{escape(_shown(s.records.get(n)))}</td>' for n in records)
        body.append(f'<tr class="{"" if s.status == SUBMITTED else "bad"}"><td>{link}</td>'
                    f'<td><span class="status {s.status.replace(" ", "-")}">{escape(s.status)}</span></td>'
                    f'<td class="num">{escape(_when(s.modified))}</td>'
                    f'<td class="where"><div class="error">{escape(s.detail)}</div></td>{values}</tr>')
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(tutorial.title)}: "
            f"submissions</title><style>{_CSS}{_STATUS_CSS}</style></head><body>\n"
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
