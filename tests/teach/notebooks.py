"""Tiny notebooks for the class-runner tests: a parameters cell and a few code cells, on the python3 kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat import v4


def write_notebook(path: Path, parameters: str, *cells: str, title: str = "Test tutorial") -> Path:
    """A notebook: a Markdown title (cell 0), the parameters cell (cell 1), then ``cells`` (cells 2, 3, ...)."""
    tagged = v4.new_code_cell(parameters)
    tagged.metadata["tags"] = ["parameters"]
    notebook = v4.new_notebook(cells=[v4.new_markdown_cell(f"# {title}"), tagged, *map(v4.new_code_cell, cells)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))
    return path


def sleepy_notebook(path: Path) -> Path:
    """Cell 2 sleeps ``seconds``; cell 3 records a value; cell 4 fails when ``fail`` is true."""
    return write_notebook(
        path,
        "seconds: float = 0.0  # how long cell 2 sleeps\nfail: bool = False  # make cell 4 fail\n"
        "label: str = 'x'  # a text parameter\nrepeat: int = 1  # a whole number",
        "import time\ntime.sleep(seconds)",
        "from cloudmri_kernel.teach import record\nrecord('twice', 2 * repeat)\nrecord('label', label)",
        "assert not fail, 'asked to fail'",
    )
