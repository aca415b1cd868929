"""record() stores values where read_records() finds them again, as JSON, with non-finite floats kept."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest
from nbformat import v4

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach import RECORD_MIMETYPE, read_records, record


@pytest.fixture
def displayed(monkeypatch):
    """The bundles record() displays, as display_data outputs of one notebook cell."""
    import IPython.display

    outputs = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda bundle, raw: outputs.append(v4.new_output("display_data", data=bundle)))
    return outputs


def notebook_with(outputs) -> nbformat.NotebookNode:
    cell = v4.new_code_cell("")
    cell.outputs = outputs
    return v4.new_notebook(cells=[v4.new_markdown_cell("# t"), cell])


def test_values_come_back_as_recorded(displayed, tmp_path):
    record("nrmse", np.float32(0.25))
    record("iterations", np.int64(12))
    record("offset", np.array([0, 1]))
    record("table", {"a": [1.5, None], "ok": True})
    record("psnr", float("inf"))
    record("nrmse", 0.125)  # a later record of the same name wins
    path = tmp_path / "executed.ipynb"
    nbformat.write(notebook_with(displayed), str(path))

    values = read_records(path)
    assert values == {"nrmse": 0.125, "iterations": 12, "offset": [0, 1], "table": {"a": [1.5, None], "ok": True},
                      "psnr": math.inf}
    assert type(values["iterations"]) is int
    assert displayed[0]["data"]["text/plain"] == "recorded nrmse = 0.25"
    assert RECORD_MIMETYPE in displayed[0]["data"]


def test_nan_survives_the_round_trip(displayed):
    record("bad", float("nan"))
    assert math.isnan(read_records(notebook_with(displayed))["bad"])


def test_bad_records_are_refused(displayed):
    with pytest.raises(UsageError, match="non-empty name"):
        record("", 1)
    with pytest.raises(UsageError, match="more than 1000 items"):
        record("image", np.zeros((40, 40)))
    with pytest.raises(UsageError, match="cannot store a object"):
        record("thing", object())
    assert displayed == []


def test_outputs_of_other_kinds_are_ignored():
    cell = v4.new_code_cell("")
    cell.outputs = [v4.new_output("stream", name="stdout", text="recorded x = 1"),
                    v4.new_output("display_data", data={RECORD_MIMETYPE: {"value": 3}}),
                    v4.new_output("execute_result", data={RECORD_MIMETYPE: {"name": "y", "value": 2}},
                                  execution_count=1)]
    assert read_records(v4.new_notebook(cells=[cell])) == {"y": 2}
