"""The remote executor against a real ``jupyter server``: outputs as nbclient keeps them, recorded values, a
failing cell, a cell past its time limit (interrupted, the kernel shut down), an unknown kernel."""

from __future__ import annotations

import os

import httpx
import pytest
from nbformat import v4

from cloudmri_kernel.teach.records import RECORD_MIMETYPE, read_records
from cloudmri_kernel.teach.remote_executor import (
    CellError,
    CellTimeout,
    KernelError,
    RemoteKernel,
    execute_notebook,
)
from cloudmri_kernel.teach.runner import failing_line
from tests.extensions.conftest import JupyterServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with JupyterServerProcess(dict(os.environ), tmp_path_factory.mktemp("server"), base_url="/user/ana/") as process:
        (process.state_dir / "root" / "work").mkdir()
        with httpx.Client(headers=process.headers(), timeout=60) as http:
            yield process, http


def notebook(*sources: str):
    return v4.new_notebook(cells=[v4.new_markdown_cell("# Test"), *map(v4.new_code_cell, sources)])


def kernels(server) -> list:
    process, http = server
    return http.get(f"{process.url}api/kernels").json()


def test_outputs_records_and_displays_come_back_as_nbclient_keeps_them(server):
    process, http = server
    nb = notebook(
        "import os\nprint('one')\nprint('two')\nos.path.basename(os.getcwd())",
        "from IPython.display import display, clear_output\nh = display('draft', display_id='d1')\n"
        "print('gone')\nclear_output()\nprint('kept')",
        "h.update('final')",
        "from cloudmri_kernel.teach import record\nrecord('twice', 2 * 21)\nrecord('label', 'sense')",
        "",
    )
    with RemoteKernel(http, process.url, "python3", path="work") as kernel:
        execute_notebook(nb, kernel, cell_timeout=60)
    first, second, third, fourth, empty = nb.cells[1:]
    assert [o.output_type for o in first.outputs] == ["stream", "execute_result"]
    assert first.outputs[0].text == "one\ntwo\n"  # consecutive text of one stream merged
    assert first.outputs[1].data["text/plain"] == "'work'"  # the kernel runs in the notebook's folder
    assert (first.execution_count, fourth.execution_count, empty.execution_count) == (1, 4, None)
    assert [o.text for o in second.outputs] == ["kept\n"]
    assert third.outputs == []
    assert fourth.outputs[0].data[RECORD_MIMETYPE] == {"name": "twice", "value": 42}
    assert read_records(nb) == {"twice": 42, "label": "sense"}
    assert kernels(server) == []


def test_a_failing_cell_stops_the_notebook_with_its_error(server):
    process, http = server
    nb = notebook("x = 1", "assert x == 2, 'x is not 2'", "print('never')")
    with RemoteKernel(http, process.url, "python3") as kernel, pytest.raises(CellError) as raised:
        execute_notebook(nb, kernel, cell_timeout=60)
    assert raised.value.cell is nb.cells[2]
    assert (raised.value.ename, raised.value.evalue) == ("AssertionError", "x is not 2")
    error = nb.cells[2].outputs[-1]
    assert error.output_type == "error" and error.ename == "AssertionError"
    assert nb.cells[3].outputs == [] and nb.cells[3].execution_count is None
    assert kernels(server) == []


def test_a_cell_past_its_limit_is_interrupted_where_it_runs_and_the_kernel_shut_down(server):
    process, http = server
    nb = notebook("import time", "x = 0\ntime.sleep(60)\nx = 1", "print('never')")
    with RemoteKernel(http, process.url, "python3") as kernel, pytest.raises(CellTimeout) as raised:
        execute_notebook(nb, kernel, cell_timeout=1.5)
    assert raised.value.cell is nb.cells[2]
    assert str(raised.value) == "the cell ran longer than the limit of 1.5 s"
    assert [o.ename for o in nb.cells[2].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    assert failing_line(nb.cells[2]) == "time.sleep(60)"  # the line the summary shows, from the traceback
    assert kernels(server) == []


def test_an_unknown_kernel_is_named(server):
    process, http = server
    with pytest.raises(KernelError, match="the server did not start a 'no-such-kernel' kernel"):
        with RemoteKernel(http, process.url, "no-such-kernel"):
            pass
