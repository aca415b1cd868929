"""The course notebooks in ``notebooks/tutorials/``: finding them, their parameters, and the data they read.

A tutorial is a notebook with one cell tagged ``parameters`` (papermill) whose assignments carry their type and
help, e.g. ``accel: int = 3  # undersampling factor``; papermill's ``inspect_notebook`` reads them, and
:func:`parameters` turns them into :class:`Parameter` objects that the class runner checks rosters against.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import nbformat

from cloudmri_kernel.errors import InvalidDataError, UsageError

#: The repository root: tutorials live in its ``notebooks/tutorials``, shared data in ``../shared/data``.
REPO_ROOT = Path(__file__).resolve().parents[2]
TUTORIALS_DIR = REPO_ROOT / "notebooks" / "tutorials"

#: Parameter types a roster value can be checked against and converted to.
TYPES = ("int", "float", "bool", "str")


@dataclass(frozen=True)
class Parameter:
    """One parameter of a tutorial, as its ``parameters`` cell declares it.

    Attributes:
        name: the variable name.
        type: ``int``, ``float``, ``bool`` or ``str``; None when neither an annotation nor the default tells.
        default: the default as written in the cell (source text).
        help: the comment after the assignment.
    """

    name: str
    type: str | None
    default: str
    help: str


@dataclass(frozen=True)
class Tutorial:
    """A course notebook: its file, title (first Markdown heading) and parameters."""

    name: str
    path: Path
    title: str
    parameters: dict[str, Parameter]


def _type_of(annotation: str, default: str) -> str | None:
    """The declared type, else the type of the literal default; None for anything else."""
    if annotation in TYPES:
        return annotation
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return None
    kind = type(value).__name__
    return kind if kind in TYPES else None


def parameters(path: str | Path) -> dict[str, Parameter]:
    """The parameters of a notebook's ``parameters`` cell, by name (papermill's ``inspect_notebook``).

    Raises:
        InvalidDataError: the notebook cannot be read or has no cell tagged ``parameters``.
    """
    import papermill

    notebook = _read(Path(path))
    if not any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells):
        raise InvalidDataError("the notebook has no cell tagged 'parameters', so papermill cannot pass it "
                               "parameters: tag the cell that assigns them (JupyterLab: Property Inspector)", path)
    inspected = papermill.inspect_notebook(str(path))
    return {name: Parameter(name, _type_of(p["inferred_type_name"], p["default"]), p["default"], p["help"])
            for name, p in inspected.items()}


def _read(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(str(path), as_version=4)
    except (OSError, ValueError) as exc:  # nbformat's read errors are ValueError subclasses
        raise InvalidDataError(f"cannot be read as a notebook ({str(exc).splitlines()[0]})", path) from None


def _title(notebook: nbformat.NotebookNode, fallback: str) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


def load_tutorial(path: str | Path) -> Tutorial:
    """A notebook file as a :class:`Tutorial` (title and parameters read from it)."""
    path = Path(path)
    return Tutorial(path.stem, path, _title(_read(path), path.stem), parameters(path))


def list_tutorials(directory: str | Path = TUTORIALS_DIR) -> list[Tutorial]:
    """The tutorials of a folder, in file-name order."""
    return [load_tutorial(path) for path in sorted(Path(directory).glob("*.ipynb"))]


def find_tutorial(name: str | Path, directory: str | Path = TUTORIALS_DIR) -> Path:
    """A tutorial by path, by file stem (``03_parallel_imaging``) or by stem without its number
    (``parallel_imaging``).

    Raises:
        UsageError: no such notebook; the message lists the tutorials there are.
    """
    given = Path(name)
    if given.suffix == ".ipynb" or given.exists():
        if not given.is_file():
            raise UsageError("no such notebook: check the path", given)
        return given
    directory = Path(directory)
    candidates = sorted(directory.glob("*.ipynb"))
    for path in candidates:
        if str(name) in (path.stem, path.stem.split("_", 1)[-1]):
            return path
    known = ", ".join(path.stem for path in candidates) or "none"
    raise UsageError(f"no tutorial '{name}' in {directory} (tutorials: {known}); give a notebook's path or "
                     "see `cloudmri teach list`")


def find_data(path: str | Path) -> Path | None:
    """A data file named relative to the working directory or to the repository root, or None if absent.

    Tutorials name their data relative to the repository (``../shared/data/...``), so they find it wherever
    they run: from ``notebooks/tutorials`` in JupyterLab, from the class runner's work folders, or from CI.
    """
    path = Path(path).expanduser()
    for candidate in ((path,) if path.is_absolute() else (path, REPO_ROOT / path)):
        if candidate.is_file():
            return candidate.resolve()
    return None
