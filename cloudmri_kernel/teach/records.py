"""Values that a tutorial's exercises record, kept in the executed notebook and read back by the class runner.

``record(name, value)`` displays the value under a custom MIME type (scrapbook's ``glue``, without scrapbook):
the kernel sends it as ``display_data``, papermill stores it with the cell's outputs, and
:func:`read_records` finds it again in the executed ``.ipynb``. In JupyterLab the student sees one line,
``recorded name = value``.

Values are stored as JSON: numbers, strings, booleans, None, and lists or dicts of them (NumPy scalars and small
arrays are converted). Infinite and NaN floats, which JSON cannot hold, are kept as a tagged string and come back
as floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING

from cloudmri_kernel.errors import UsageError

if TYPE_CHECKING:
    import nbformat

#: The MIME type of a recorded value in a notebook's outputs.
RECORD_MIMETYPE = "application/vnd.cloudmri.teach.record+json"
#: Largest list (or array) a record may hold: records are results to compare, not data.
MAX_ITEMS = 1000

_NON_FINITE = "__non_finite__"


def _jsonable(value, name: str, budget: list[int]):
    if value is None or isinstance(value, bool | str):
        return value
    if hasattr(value, "tolist") and not isinstance(value, list | tuple | dict):  # NumPy scalars and arrays
        return _jsonable(value.tolist(), name, budget)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        number = float(value)
        return number if math.isfinite(number) else {_NON_FINITE: repr(number)}
    if isinstance(value, list | tuple):
        budget[0] -= len(value)
        if budget[0] < 0:
            raise UsageError(f"record '{name}' holds more than {MAX_ITEMS} items: record summary numbers "
                             "(a mean, a score), not arrays")
        return [_jsonable(item, name, budget) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, name, budget) for key, item in value.items()}
    raise UsageError(f"record '{name}' cannot store a {type(value).__name__}: record numbers, strings, booleans, "
                     "or lists and dicts of them")


def _restore(value):
    if isinstance(value, dict):
        if set(value) == {_NON_FINITE}:
            return float(value[_NON_FINITE])
        return {key: _restore(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore(item) for item in value]
    return value


def record(name: str, value) -> None:
    """Record a value of an exercise so that ``cloudmri teach run`` lists it in the class summary.

    Example:
        >>> record("nrmse_sense", 0.042)  # doctest: +SKIP
        recorded nrmse_sense = 0.042

    Raises:
        UsageError: an empty name, or a value that is not JSON-like or holds more than :data:`MAX_ITEMS` items.
    """
    from IPython.display import display

    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"a record needs a non-empty name, got {name!r}")
    stored = _jsonable(value, name, [MAX_ITEMS])
    shown = _restore(stored)
    display({RECORD_MIMETYPE: {"name": name, "value": stored}, "text/plain": f"recorded {name} = {shown!r}"},
            raw=True)


def read_records(notebook: str | Path | nbformat.NotebookNode) -> dict[str, object]:
    """The values an executed notebook recorded, by name, in the order first recorded (a later record wins)."""
    import nbformat

    nb = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(str(notebook), as_version=4)
    values: dict[str, object] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {}) if output.get("output_type") in ("display_data", "execute_result") else {}
            content = data.get(RECORD_MIMETYPE)
            if isinstance(content, Mapping) and isinstance(content.get("name"), str):
                values[content["name"]] = _restore(content.get("value"))
    return values
