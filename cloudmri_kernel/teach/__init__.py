"""Teaching with the workbench: course notebooks (``notebooks/tutorials``) run for a whole class.

In a tutorial, exercises call :func:`record` to keep their results; an instructor runs the tutorial once per
student with :func:`run_class` (``cloudmri teach run``), or in each student's own server on the hub with
:func:`run_class_on_hub` (``cloudmri teach run --hub``), and reads the summary. See ``docs/teaching.md``.

Names are loaded on first use, so that ``from cloudmri_kernel.teach import record`` in a notebook stays cheap
(no papermill, no multiprocessing).

Example:
    >>> from cloudmri_kernel.teach import run_class
    >>> run = run_class("parallel_imaging", "roster.csv", out_dir="out/class", parallel=2)  # doctest: +SKIP
    >>> [(r.student, r.status) for r in run.failed]  # doctest: +SKIP
"""

import importlib

_MODULES = {
    "Collection": "collect", "Submission": "collect", "collect_class": "collect",
    "RECORD_MIMETYPE": "records", "read_records": "records", "record": "records",
    "RosterError": "roster", "Student": "roster", "read_roster": "roster",
    "ClassRun": "runner", "StudentResult": "runner", "run_class": "runner", "run_class_on_hub": "hub_runner",
    "TUTORIALS_DIR": "tutorials", "Parameter": "tutorials", "Tutorial": "tutorials", "find_data": "tutorials",
    "find_tutorial": "tutorials", "list_tutorials": "tutorials", "load_tutorial": "tutorials",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(f"cloudmri_kernel.teach.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'cloudmri_kernel.teach' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
