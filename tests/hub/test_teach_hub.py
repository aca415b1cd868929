"""`cloudmri teach run --hub` on the real hub: an instructor (not an admin) runs a tutorial in each student's own
server, whose kernel runs as the student's system account; the notebooks land in the students' homes, owned by
them, and in --out with their recorded values; a researcher's token is refused with the scope named; a stopped
server is reported as such."""

from __future__ import annotations

import csv
import json
import os
import pwd
from pathlib import Path

import httpx
import nbformat
import pytest
import yaml
from typer.testing import CliRunner

import cloudmri_kernel.cli_teach  # noqa: F401 - registers `teach` on the app
from cloudmri_kernel import up
from cloudmri_kernel.cli import app
from cloudmri_kernel.teach.hub import ACCESS_SCOPE
from cloudmri_kernel.teach.hub_runner import run_class_on_hub
from cloudmri_kernel.teach.records import read_records
from hub_config.spawner import system_name
from tests.hub.conftest import needs_user_servers
from tests.hub.test_spawn import _start_server, _stop_server
from tests.teach.notebooks import write_notebook
from tests.teach.test_tutorials import RECORDS, SMALL

pytestmark = [pytest.mark.slow, *needs_user_servers]

CLASS = ("ana", "bob", "cara")


def teach_run(*args, token: str):
    return CliRunner().invoke(app, ["teach", "run", *map(str, args)],
                              env={"COLUMNS": "200", "JUPYTERHUB_API_TOKEN": token})


def summary(out) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open(newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """Cell 2 records who and where the kernel runs; cell 3 sleeps ``seconds``, prints ``label`` and records a
    value; cell 4 fails when ``fail``."""
    return write_notebook(
        tmp_path_factory.mktemp("tutorial") / "whoami.ipynb",
        "fail: bool = False  # make cell 4 fail\nrepeat: int = 1  # a whole number\nlabel: str = 'x'  # a text\n"
        "seconds: float = 0.0  # how long cell 3 sleeps",
        "import os, pwd\nfrom cloudmri_kernel.teach import record\n"
        "record('account', pwd.getpwuid(os.getuid()).pw_name)\nrecord('folder', os.path.basename(os.getcwd()))",
        "import time\ntime.sleep(seconds)\nprint(label)\nrecord('twice', 2 * repeat)",
        "assert not fail, 'asked to fail'",
    )


@pytest.fixture(scope="module")
def classroom(workbench):
    manager = {"Authorization": f"token {workbench.manager_token}"}
    for student in CLASS:
        assert httpx.post(f"{workbench.url}/hub/api/users/{student}", headers=manager).status_code == 201
    assert httpx.post(f"{workbench.url}/hub/api/groups/students/users", json={"users": list(CLASS)},
                      headers=manager).status_code == 200
    instructor = up.user_token(workbench, "instructor", "teach run test")
    yield instructor
    for student in CLASS:
        _stop_server(workbench, student, instructor)


def test_an_instructor_runs_a_tutorial_in_each_students_own_server(workbench, classroom, tutorial, tmp_path):
    (tmp_path / "roster.csv").write_text("student,repeat,label,fail\nana,1,first,\nbob,2,second,\ncara,3,third,true\n")
    out = tmp_path / "out"
    result = teach_run(tutorial, "--class", tmp_path / "roster.csv", "--hub", workbench.url, "--start-servers",
                       "--out", out, "--parallel", "2", "--timeout", "120", token=classroom)
    assert result.exit_code == 1, result.output
    rows = summary(out)
    assert {name: (row["status"], row["cell"], row["error"]) for name, row in rows.items()} == {
        "ana": ("ok", "", ""), "bob": ("ok", "", ""), "cara": ("failed", "4", "AssertionError: asked to fail")}
    prefix = os.environ["CLOUDMRI_SYSTEM_PREFIX"]
    for student, repeat in (("ana", 1), ("bob", 2), ("cara", 3)):
        account = system_name(student, prefix)
        assert rows[student]["record:account"] == account  # the kernel ran as the student's own account
        assert (rows[student]["record:folder"], rows[student]["record:twice"]) == ("cloudmri-teach", str(2 * repeat))
        assert rows[student]["notebook"] == f"notebooks/{student}.ipynb"
        saved = nbformat.read(str(out / "notebooks" / f"{student}.ipynb"), as_version=4)
        assert read_records(saved) == {"account": account, "folder": "cloudmri-teach", "twice": 2 * repeat}
        assert "injected-parameters" in saved.cells[2].metadata["tags"]
        assert saved.cells[4].outputs[0].text == {"ana": "first\n", "bob": "second\n", "cara": "third\n"}[student]
        in_home = Path(os.environ["CLOUDMRI_HOMES_DIR"]) / account / "cloudmri-teach" / "whoami.ipynb"
        assert pwd.getpwuid(in_home.stat().st_uid).pw_name == account
        assert nbformat.read(str(in_home), as_version=4) == saved
    assert [o.ename for o in saved.cells[5].outputs if o.output_type == "error"] == ["AssertionError"]
    assert 'cell 4: <code>assert not fail, &#x27;asked to fail&#x27;</code>' in (out / "summary.html").read_text()


def test_a_researchers_token_is_refused_naming_the_scope(workbench, classroom, tutorial, tmp_path):
    (tmp_path / "roster.csv").write_text("student\nana\n")
    researcher = up.user_token(workbench, "researcher", "teach run test")
    result = teach_run(tutorial, "--class", tmp_path / "roster.csv", "--hub", workbench.url, "--out",
                       tmp_path / "out", token=researcher)
    assert result.exit_code == 2, result.output
    assert f"the token of researcher lacks the scope {ACCESS_SCOPE}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_real_tutorial_runs_in_the_students_servers(workbench, classroom, tmp_path):
    (tmp_path / "roster.csv").write_text("student,seed\nana,1\nbob,2\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL["01_mrd_files"]))
    run = run_class_on_hub("mrd_files", tmp_path / "roster.csv", tmp_path / "params.yaml", hub_url=workbench.url,
                           token=classroom, out_dir=tmp_path / "out", parallel=2, cell_timeout=300,
                           start_servers=True)
    assert [(r.student, r.status, r.error) for r in run.results] == [("ana", "ok", None), ("bob", "ok", None)]
    for result in run.results:
        assert set(result.records) == RECORDS["01_mrd_files"] and result.records["valid"] is True
        assert result.parameters == {**SMALL["01_mrd_files"], "seed": {"ana": 1, "bob": 2}[result.student]}


def test_a_stopped_server_an_unknown_student_and_a_cell_past_its_limit(workbench, classroom, tutorial, tmp_path):
    _start_server(workbench, "ana", classroom, "cpu-2")  # when this test runs alone; else ana's server runs
    _stop_server(workbench, "bob", classroom)
    (tmp_path / "roster.csv").write_text("student,seconds\nana,600\nbob,\nzed,\n")
    result = teach_run(tutorial, "--class", tmp_path / "roster.csv", "--hub", workbench.url, "--out",
                       tmp_path / "out", "--timeout", "5", token=classroom)
    assert result.exit_code == 1, result.output
    rows = summary(tmp_path / "out")
    assert {name: (row["status"], row["cell"]) for name, row in rows.items()} == {
        "ana": ("timeout", "3"), "bob": ("not running", ""), "zed": ("unknown student", "")}
    assert rows["ana"]["error"] == "the cell ran longer than the limit of 5 s"
    assert "cell 3: <code>time.sleep(seconds)</code>" in (tmp_path / "out" / "summary.html").read_text()
    assert rows["bob"]["error"] == "bob's server is not running: start it (--start-servers) or ask the student to"
    assert rows["bob"]["notebook"] == "" and not (tmp_path / "out" / "notebooks" / "bob.ipynb").exists()


def test_a_second_run_keeps_the_students_copy_of_the_first(workbench, classroom, tutorial, tmp_path):
    """The student's notebook from the first run, with the student's own cell added, is renamed, not overwritten."""
    _start_server(workbench, "ana", classroom, "cpu-2")  # when this test runs alone; else ana's server runs
    (tmp_path / "roster.csv").write_text("student,label\nana,first\n")
    account = system_name("ana", os.environ["CLOUDMRI_SYSTEM_PREFIX"])
    folder = Path(os.environ["CLOUDMRI_HOMES_DIR"]) / account / "cloudmri-teach"
    before = {path.name for path in folder.glob("*.ipynb")} if folder.is_dir() else set()
    assert teach_run(tutorial, "--class", tmp_path / "roster.csv", "--hub", workbench.url, "--out",
                     tmp_path / "one", token=classroom).exit_code == 0
    mine = nbformat.read(str(folder / "whoami.ipynb"), as_version=4)
    mine.cells.append(nbformat.v4.new_markdown_cell("my answer: 42"))
    contents = f"{workbench.url}/user/ana/api/contents/cloudmri-teach/whoami.ipynb"
    saved = httpx.put(contents, headers={"Authorization": f"token {classroom}"},
                      json={"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(mine))})
    assert saved.status_code == 200, saved.text
    (tmp_path / "roster.csv").write_text("student,label\nana,second\n")
    assert teach_run(tutorial, "--class", tmp_path / "roster.csv", "--hub", workbench.url, "--out",
                     tmp_path / "two", token=classroom).exit_code == 0
    new = {path.name for path in folder.glob("*.ipynb")} - before - {"whoami.ipynb"}
    kept = [name for name in new if nbformat.read(str(folder / name), as_version=4).cells[-1].source == "my answer: 42"]
    assert len(kept) == 1 and kept[0].startswith("whoami-2") and kept[0].endswith(".ipynb"), new
    assert pwd.getpwuid((folder / kept[0]).stat().st_uid).pw_name == account
    latest = nbformat.read(str(folder / "whoami.ipynb"), as_version=4)
    assert latest.cells[4].outputs[0].text == "second\n" and latest.cells[-1].source != "my answer: 42"
