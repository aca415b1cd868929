"""Running one tutorial for a whole class: once per student with papermill, in parallel processes.

Everything is checked before the first notebook starts (:func:`~cloudmri_kernel.teach.roster.read_roster`): a
class with a bad roster runs nobody and writes nothing. Each student's notebook then runs in a worker process on
a fresh local kernel, in its own working folder, with a per-cell time limit; one student's failure never stops
the others. The output folder holds::

    notebooks/STUDENT.ipynb   the executed notebook (also when it failed: the error is in it)
    logs/STUDENT.log          what papermill and the kernel printed
    work/STUDENT/             the notebook's working directory
    summary.csv, summary.html who succeeded, where the others failed, and the recorded values
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach.records import read_records
from cloudmri_kernel.teach.roster import RosterError, Student, read_roster
from cloudmri_kernel.teach.tutorials import Tutorial, load_tutorial

#: Seconds a single cell may run before the student's notebook is stopped and reported as a timeout.
DEFAULT_CELL_TIMEOUT = 600
#: Seconds a kernel may take to start.
KERNEL_START_TIMEOUT = 120
#: Cells papermill adds to an executed notebook; they are not counted when naming the failing cell.
_ADDED_TAGS = ("injected-parameters", "papermill-error-cell-tag")


@dataclass
class StudentResult:
    """How one student's notebook ran.

    Attributes:
        student: the name on the roster.
        status: ``ok``, ``failed`` (a cell raised, or the kernel died) or ``timeout`` (a cell ran too long); on
            the hub (:mod:`~cloudmri_kernel.teach.hub_runner`) also ``not running``, ``refused``, ``unknown
            student`` or ``unreachable``, when the student's server could not be used.
        parameters: the parameters it ran with (besides the tutorial's defaults).
        notebook: the executed notebook; None when nothing ran.
        seconds: wall time of the run.
        cell: index of the failing cell in the tutorial (0-based, as nbformat counts; papermill's injected
            parameters cell is not counted); None when ok or when no cell was reached.
        source: the line of the failing cell that raised, or that was running when the time limit stopped it
            (the cell's first line when no traceback tells).
        error: one line: the exception and its message, what timed out, or why the student's server could not be
            used.
        records: the values the exercises recorded (:func:`~cloudmri_kernel.teach.records.record`).
    """

    student: str
    status: str
    parameters: dict[str, object]
    notebook: Path | None
    seconds: float
    cell: int | None = None
    source: str | None = None
    error: str | None = None
    records: dict[str, object] = field(default_factory=dict)


@dataclass
class ClassRun:
    """A class's run of a tutorial: one result per student, in roster order, and the summary files."""

    tutorial: Tutorial
    out_dir: Path
    results: list[StudentResult]
    summary_csv: Path
    summary_html: Path

    @property
    def failed(self) -> list[StudentResult]:
        return [result for result in self.results if result.status != "ok"]


@dataclass(frozen=True)
class _Job:
    student: Student
    tutorial: Path
    notebook: Path
    log: Path
    workdir: Path
    kernel_name: str
    cell_timeout: float
    threads: int


def _kernel_name(tutorial: Tutorial, kernel_name: str | None) -> str:
    if kernel_name:
        return kernel_name
    spec = nbformat.read(str(tutorial.path), as_version=4).metadata.get("kernelspec", {})
    return spec.get("name") or "python3"


def _check_kernel(name: str) -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
        return [f"no Jupyter kernel '{name}' here (kernels: {known}): pass another kernel name"]
    return []


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr, and so the kernel's, to a file (file descriptors 1 and 2)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")


def failing_line(cell: nbformat.NotebookNode) -> str:
    """The line of the cell that raised, from IPython's traceback ("Cell In[3], line 23"); else its first line.

    A cell stopped by the time limit has a traceback too: the kernel is interrupted at the running line.
    """
    lines = cell.source.splitlines()
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            found = _CELL_LINE.search(_ANSI.sub("", "\n".join(output.get("traceback", []))))
            if found and 0 < int(found.group(1)) <= len(lines):
                return lines[int(found.group(1)) - 1].strip()
    return first_line(cell.source)


def tutorial_cells(notebook: nbformat.NotebookNode) -> list[tuple[int, nbformat.NotebookNode]]:
    """(index in the tutorial, cell) of an executed notebook's own cells, without those papermill added."""
    own = [cell for cell in notebook.cells if not set(cell.metadata.get("tags", [])) & set(_ADDED_TAGS)]
    return list(enumerate(own))


def _failing_cell(notebook: nbformat.NotebookNode, status: str) -> tuple[int, nbformat.NotebookNode] | None:
    """The cell where an executed notebook stopped: the one with an error (failed), or the last one started."""
    cells = tutorial_cells(notebook)
    if status == "timeout":
        started = [(i, c) for i, c in cells if c.metadata.get("papermill", {}).get("start_time")]
        return started[-1] if started else None
    for index, cell in cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors or cell.metadata.get("papermill", {}).get("exception"):
            return index, cell
    return None


def _stop(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def _worker_signals() -> None:
    """Ctrl-C is the parent's to handle; the parent stops a worker with SIGTERM, which unwinds papermill so that
    it shuts the student's kernel down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)


def _run_student(job: _Job) -> StudentResult:
    """Execute one student's notebook (in a worker process) and describe the outcome."""
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    for folder in (job.notebook.parent, job.log.parent, job.workdir):
        folder.mkdir(parents=True, exist_ok=True)
    # papermill reports each cell and its output through logging: into the student's log. A file handler, not
    # the redirected stderr: what is logged after the redirection ends (asyncio's "Task exception was never
    # retrieved" for the cell a stop interrupted, logged as the worker exits) belongs there too, not on the
    # instructor's terminal.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=[logging.FileHandler(job.log)], force=True)
    # Several kernels share the machine: give each its share of the cores (torch and BLAS read these at import).
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(job.threads)
    # Kernels talk over Unix sockets in the student's own folder: TCP ports are picked free and released before
    # the kernel binds them, so kernels that start together can collide ("Kernel died before replying").
    config = Config({"KernelManager": {"transport": "ipc"}})
    status, error = "ok", None
    start = time.monotonic()
    with _output_to(job.log):
        try:
            papermill.execute_notebook(str(job.tutorial), str(job.notebook), parameters=job.student.parameters,
                                       kernel_name=job.kernel_name, progress_bar=False, cwd=str(job.workdir),
                                       execution_timeout=job.cell_timeout, start_timeout=KERNEL_START_TIMEOUT,
                                       log_output=True, config=config)
        except PapermillExecutionError as exc:
            status, error = "failed", f"{exc.ename}: {first_line(exc.evalue)}".rstrip(": ")
        except CellTimeoutError:
            status, error = "timeout", f"the cell ran longer than the limit of {job.cell_timeout:g} s"
        except Exception as exc:  # a kernel that died or never started fails this student, not the class
            status, error = "failed", f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
    seconds = time.monotonic() - start
    result = StudentResult(job.student.name, status, dict(job.student.parameters), job.notebook, seconds,
                           error=error)
    if job.notebook.is_file():
        executed = nbformat.read(str(job.notebook), as_version=4)
        result.records = read_records(executed)
        if status != "ok":
            found = _failing_cell(executed, status)
            if found is not None:
                result.cell, result.source = found[0], failing_line(found[1])
    return result


def run_class(tutorial: str | Path, roster_csv: str | Path, params_yaml: str | Path | None = None, *,
              out_dir: str | Path, parallel: int = 1, cell_timeout: float = DEFAULT_CELL_TIMEOUT,
              kernel_name: str | None = None,
              progress: Callable[[int, int, StudentResult], None] | None = None) -> ClassRun:
    """Run a tutorial once per student of a roster and write the executed notebooks and the summary.

    Args:
        tutorial: the notebook (see :func:`~cloudmri_kernel.teach.tutorials.find_tutorial` for names).
        roster_csv: the class: a ``student`` column and parameter columns
            (:func:`~cloudmri_kernel.teach.roster.read_roster`).
        params_yaml: parameters for the whole class; the roster's cells win.
        out_dir: where the notebooks, logs and summaries go (created).
        parallel: students run at the same time, each in its own process and kernel.
        cell_timeout: seconds one cell may run; a longer one stops that student's notebook (status
            ``timeout``).
        kernel_name: the Jupyter kernel; default the notebook's own.
        progress: ``progress(done, total, result)`` after each student.

    Raises:
        RosterError: the roster, the parameters or the kernel are wrong; nothing ran and nothing was written.
        UsageError: ``parallel`` or ``cell_timeout`` out of range.
    """
    from cloudmri_kernel.teach.summary import write_summary
    from cloudmri_kernel.teach.tutorials import find_tutorial

    if parallel < 1:
        raise UsageError(f"parallel must be at least 1, got {parallel}")
    if not cell_timeout > 0:
        raise UsageError(f"the cell timeout must be a positive number of seconds, got {cell_timeout}")
    loaded = load_tutorial(find_tutorial(tutorial))
    kernel = _kernel_name(loaded, kernel_name)
    try:
        students = read_roster(roster_csv, loaded, params_yaml)
    except RosterError as exc:
        raise RosterError(exc.problems + _check_kernel(kernel)) from None
    problems = _check_kernel(kernel)
    if problems:
        raise RosterError(problems)

    out_dir = Path(out_dir)
    workers = min(parallel, len(students))
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [_Job(student, loaded.path.resolve(), (out_dir / "notebooks" / f"{student.slug}.ipynb").resolve(),
                 (out_dir / "logs" / f"{student.slug}.log").resolve(), (out_dir / "work" / student.slug).resolve(),
                 kernel, float(cell_timeout), threads)
            for student in students]
    out_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        job.log.unlink(missing_ok=True)
    results: dict[str, StudentResult] = {}
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_signals)
    try:
        for result in pool.imap_unordered(_run_student, jobs):
            results[result.student] = result
            if progress is not None:
                progress(len(results), len(jobs), result)
    except BaseException:
        pool.terminate()  # Ctrl-C or an error here: stop the running notebooks, whose kernels shut down with them
        raise
    finally:
        pool.close()
        pool.join()
    ordered = [results[student.name] for student in students]
    csv_path, html_path = write_summary(loaded, ordered, out_dir)
    return ClassRun(loaded, out_dir, ordered, csv_path, html_path)
