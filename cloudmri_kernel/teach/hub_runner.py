"""Running one tutorial for a whole class on the hub, each student's notebook in the student's own server.

The kernel runs where the student works: in the student's server, as the student's system account, with the
student's files, data and API token, not on the instructor's machine. An instructor (the hub's ``instructors``
role, not an admin) does it with their hub token, through :class:`~cloudmri_kernel.teach.hub.Hub`:

1. everything is checked before any student is touched, as for a local run: the roster and the parameters
   against the tutorial (:func:`~cloudmri_kernel.teach.roster.read_roster`), each student's notebook
   parameterized with papermill's own injection (``parameterize_notebook``), and the token's scopes;
2. per student: the hub finds the student's server (or starts it and waits, with ``start_servers``); the
   parameterized notebook is saved into the student's home through the server's contents API, as
   ``cloudmri-teach/TUTORIAL.ipynb`` (``PUT /api/contents/…``; the server writes it atomically). A notebook
   already there (an earlier run's, perhaps with the student's own work in it) is first renamed to
   ``TUTORIAL-YYYYMMDDTHHMMSS.ipynb`` after its last change (``PATCH /api/contents/…``), never overwritten; a
   kernel starts in the student's server, in that folder (the Cloud-MRI kernel when the server has it, else the
   notebook's own), and the notebook runs cell by cell over
   the kernel's websocket (:mod:`~cloudmri_kernel.teach.remote_executor`) with the per-cell time limit; the
   executed notebook is saved both back into the student's home and into ``OUT/notebooks/STUDENT.ipynb``, and
   the kernel is shut down;
3. ``summary.csv`` and ``summary.html`` (:mod:`~cloudmri_kernel.teach.summary`) list every student: ``ok``,
   ``failed`` (the cell and the error), ``timeout``, ``not running``, ``refused`` (the scope needed),
   ``unknown student`` or ``unreachable``.

References:
    JupyterHub documentation, "JupyterHub REST API" and "JupyterHub RBAC", JupyterHub 5.
    Jupyter Server documentation, "REST API" (``/api/contents``, ``/api/kernelspecs``, ``/api/kernels``).
    papermill documentation, "Parameterize" (the injected-parameters cell).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import quote

import httpx
import nbformat

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach.hub import ACCESS_SCOPE, REFUSED, UNREACHABLE, Hub, ServerProblem, reason
from cloudmri_kernel.teach.records import read_records
from cloudmri_kernel.teach.remote_executor import (
    Cancelled,
    CellError,
    CellTimeout,
    KernelError,
    RemoteKernel,
    execute_notebook,
)
from cloudmri_kernel.teach.roster import RosterError, Student, read_roster
from cloudmri_kernel.teach.runner import (
    DEFAULT_CELL_TIMEOUT,
    KERNEL_START_TIMEOUT,
    ClassRun,
    StudentResult,
    failing_line,
    first_line,
    tutorial_cells,
)
from cloudmri_kernel.teach.summary import write_summary
from cloudmri_kernel.teach.tutorials import Tutorial, find_tutorial, load_tutorial

#: The folder of each student's home that receives the tutorial, parameterized and then executed.
REMOTE_FOLDER = "cloudmri-teach"
#: The kernel a notebook runs in when the student's server has it: Python with ``cloudmri_kernel`` as ``cm``.
CLOUDMRI_KERNEL = "cloudmri"


def _parameterized(tutorial: Tutorial, student: Student) -> nbformat.NotebookNode:
    """The tutorial with the student's parameters injected after its ``parameters`` cell, as papermill does."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    return parameterize_notebook(load_notebook_node(str(tutorial.path)), dict(student.parameters))


class _Student:
    """One student's run in their own server; :meth:`run` never raises for the student's own problems."""

    def __init__(self, hub: Hub, student: Student, notebook: nbformat.NotebookNode, tutorial: Tutorial,
                 out_dir: Path, kernel_name: str | None, cell_timeout: float, start_servers: bool,
                 start_timeout: float, cancel: threading.Event):
        self.hub, self.student, self.notebook, self.tutorial = hub, student, notebook, tutorial
        self.saved = (out_dir / "notebooks" / f"{student.slug}.ipynb").resolve()
        self.remote_path = f"{REMOTE_FOLDER}/{tutorial.path.name}"
        self.kernel_name, self.cell_timeout = kernel_name, cell_timeout
        self.start_servers, self.start_timeout, self.cancel = start_servers, start_timeout, cancel
        self.started = 0.0

    def result(self, status: str, error: str | None = None, notebook: Path | None = None,
               cell: nbformat.NotebookNode | None = None) -> StudentResult:
        result = StudentResult(self.student.name, status, dict(self.student.parameters), notebook,
                               time.monotonic() - self.started, error=error)
        if notebook is not None:
            result.records = read_records(self.notebook)
        if cell is not None:
            result.cell = next(index for index, own in tutorial_cells(self.notebook) if own is cell)
            result.source = failing_line(cell)
        return result

    def refused(self, server: str, reply: httpx.Response, doing: str) -> StudentResult:
        name = self.student.name
        if reply.status_code in (401, 403):
            return self.result(REFUSED, f"{name}'s server refused the token ({reason(reply)}): {doing} needs "
                               f"{ACCESS_SCOPE}")
        return self.result("failed", f"{name}'s server at {server} answered {reason(reply)} to {doing}")

    def kernel(self, server: str) -> str | StudentResult:
        """The kernel to start: the one asked for, else the Cloud-MRI kernel where the server has it, else the
        notebook's own."""
        reply = self.hub.http.get(f"{server}api/kernelspecs")
        if reply.status_code != 200:
            return self.refused(server, reply, "listing the kernels")
        specs = reply.json().get("kernelspecs", {})
        name = self.kernel_name or (CLOUDMRI_KERNEL if CLOUDMRI_KERNEL in specs else
                                    self.notebook.metadata.get("kernelspec", {}).get("name") or "python3")
        if name not in specs:
            return self.result("failed", f"{self.student.name}'s server has no kernel '{name}' (kernels: "
                               f"{', '.join(sorted(specs)) or 'none'}): pass another with --kernel")
        spec = specs[name].get("spec", {})
        self.notebook.metadata["kernelspec"] = {"name": name, "display_name": spec.get("display_name", name),
                                                "language": spec.get("language", "python")}
        return name

    def save_remote(self, server: str) -> httpx.Response:
        """Save the notebook into the student's home through the contents API (the server writes atomically)."""
        content = json.loads(nbformat.writes(self.notebook))
        return self.hub.http.put(f"{server}api/contents/{quote(self.remote_path)}",
                                 json={"type": "notebook", "format": "json", "content": content})

    def keep_previous(self, server: str) -> httpx.Response | None:
        """Rename an existing ``~/cloudmri-teach/TUTORIAL.ipynb`` after its last change; the failed reply, if any.

        Jupyter Server refuses to rename onto an existing file (409): a second copy from the same second gets a
        counter.
        """
        url = f"{server}api/contents/{quote(self.remote_path)}"
        existing = self.hub.http.get(url, params={"content": "0"})
        if existing.status_code == 404:
            return None
        if existing.status_code != 200:
            return existing
        changed = existing.json().get("last_modified", "")
        stamp = re.sub(r"[^0-9T]", "", changed.split(".")[0].split("+")[0]) or "previous"
        stem = self.tutorial.path.stem
        for suffix in ("", *(f"-{n}" for n in range(2, 100))):
            moved = self.hub.http.patch(url, json={"path": f"{REMOTE_FOLDER}/{stem}-{stamp}{suffix}.ipynb"})
            if moved.status_code != 409:
                return None if moved.status_code == 200 else moved
        return moved

    def save_local(self) -> Path:
        self.saved.parent.mkdir(parents=True, exist_ok=True)
        temp = self.saved.with_name(f".{self.saved.name}.tmp")
        nbformat.write(self.notebook, str(temp))
        temp.replace(self.saved)
        return self.saved

    def run(self) -> StudentResult:
        self.started = time.monotonic()
        try:
            server = self.hub.server(self.student.name, self.start_servers, self.start_timeout, self.cancel)
            if isinstance(server, ServerProblem):
                return self.result(server.status, server.detail)
            kernel = self.kernel(server)
            if isinstance(kernel, StudentResult):
                return kernel
            folder = self.hub.http.put(f"{server}api/contents/{REMOTE_FOLDER}", json={"type": "directory"})
            if folder.status_code not in (200, 201):
                return self.refused(server, folder, f"creating ~/{REMOTE_FOLDER}")
            kept = self.keep_previous(server)
            if kept is not None:
                return self.refused(server, kept, f"keeping the previous ~/{self.remote_path}")
            written = self.save_remote(server)
            if written.status_code not in (200, 201):
                return self.refused(server, written, f"writing ~/{self.remote_path}")
            return self.execute(server, kernel)
        except httpx.TransportError as exc:
            return self.result(UNREACHABLE, f"no answer for {self.student.name} ({exc!r})")
        except json.JSONDecodeError as exc:
            return self.result(UNREACHABLE, f"a reply for {self.student.name} was not JSON ({exc})")

    def execute(self, server: str, kernel_name: str) -> StudentResult:
        status, error, cell = "ok", None, None
        try:
            with RemoteKernel(self.hub.http, server, kernel_name, REMOTE_FOLDER, KERNEL_START_TIMEOUT,
                              self.cancel) as kernel:
                execute_notebook(self.notebook, kernel, self.cell_timeout)
        except CellError as exc:
            status, error, cell = "failed", f"{exc.ename}: {first_line(exc.evalue)}".rstrip(": "), exc.cell
        except CellTimeout as exc:
            status, error, cell = "timeout", str(exc), exc.cell
        except KernelError as exc:
            status, error = "failed", str(exc)
        except Cancelled:
            status, error = "failed", "cancelled by the instructor"
        saved = self.save_local()
        written = self.save_remote(server)
        if written.status_code not in (200, 201):
            error = (f"{error}; " if error else "") + (f"the executed notebook was not saved in the student's "
                                                       f"home ({reason(written)})")
            status = "failed" if status == "ok" else status
        return self.result(status, error, saved, cell)


def run_class_on_hub(tutorial: str | Path, roster_csv: str | Path, params_yaml: str | Path | None = None, *,
                     hub_url: str, token: str | None, out_dir: str | Path, parallel: int = 1,
                     cell_timeout: float = DEFAULT_CELL_TIMEOUT, kernel_name: str | None = None,
                     start_servers: bool = False, start_timeout: float = 180.0, timeout: float = 60.0,
                     progress: Callable[[int, int, StudentResult], None] | None = None) -> ClassRun:
    """Run a tutorial once per student of a roster, each in the student's own server on the hub.

    Args:
        tutorial: the notebook (see :func:`~cloudmri_kernel.teach.tutorials.find_tutorial` for names).
        roster_csv: the class; its ``student`` column holds hub user names.
        params_yaml: parameters for the whole class; the roster's cells win.
        hub_url: the hub's public URL, e.g. ``http://127.0.0.1:8000``.
        token: an instructor's hub API token.
        out_dir: where the executed notebooks and the summaries go (created).
        parallel: students run at the same time (each in their own server and kernel).
        cell_timeout: seconds one cell may run; a longer one stops that student's notebook (``timeout``).
        kernel_name: the kernel on the servers; default the Cloud-MRI kernel where a server has it, else the
            notebook's own.
        start_servers: start servers that are not running (needs
            :data:`~cloudmri_kernel.teach.hub.START_SCOPE`) instead of reporting them.
        start_timeout: seconds to wait for a server to become ready.
        timeout: seconds one HTTP request may take.
        progress: ``progress(done, total, result)`` after each student.

    Raises:
        RosterError: the roster or the parameters are wrong; nothing ran and nothing was written.
        UsageError: no token, a token the hub refuses or without the scopes needed (named), no hub at the URL,
            ``parallel`` or ``cell_timeout`` out of range; nothing ran.
    """
    if parallel < 1:
        raise UsageError(f"parallel must be at least 1, got {parallel}")
    if not cell_timeout > 0:
        raise UsageError(f"the cell timeout must be a positive number of seconds, got {cell_timeout}")
    loaded = load_tutorial(find_tutorial(tutorial))
    students = read_roster(roster_csv, loaded, params_yaml)
    try:
        notebooks = [_parameterized(loaded, student) for student in students]
    except Exception as exc:  # papermill has no translator for the notebook's language, or the like
        raise RosterError([f"{loaded.path}: papermill cannot inject the parameters ({exc})"]) from None
    if not token:
        raise UsageError("no hub token: give --token-file or set JUPYTERHUB_API_TOKEN to an instructor's token "
                         "(hub → Token page)")
    out_dir = Path(out_dir)
    cancel = threading.Event()
    with Hub(hub_url, token, timeout) as hub:
        hub.check_token(start_servers, "running a tutorial in students' servers", "nothing was run")
        out_dir.mkdir(parents=True, exist_ok=True)
        runs = [_Student(hub, student, notebook, loaded, out_dir, kernel_name, float(cell_timeout), start_servers,
                         start_timeout, cancel) for student, notebook in zip(students, notebooks, strict=True)]
        results: dict[str, StudentResult] = {}
        pool = ThreadPoolExecutor(max_workers=min(parallel, len(runs)), thread_name_prefix="teach-hub")
        try:
            for future in as_completed([pool.submit(run.run) for run in runs]):
                result = future.result()
                results[result.student] = result
                if progress is not None:
                    progress(len(results), len(runs), result)
        except BaseException:
            cancel.set()  # Ctrl-C or an error here: running cells stop and their kernels are shut down
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    ordered = [results[student.name] for student in students]
    csv_path, html_path = write_summary(loaded, ordered, out_dir)
    return ClassRun(loaded, out_dir, ordered, csv_path, html_path)
