"""`cloudmri teach collect` on the real hub: an instructor (not an admin) collects the class's submissions from the
students' own servers, with the instructors' role's scopes; a researcher's token is refused with the scope named."""

from __future__ import annotations

import csv
import json

import httpx
import nbformat
import pytest
from typer.testing import CliRunner

import cloudmri_kernel.cli_teach  # noqa: F401 - registers `teach` on the app
from cloudmri_kernel import up
from cloudmri_kernel.cli import app
from cloudmri_kernel.teach.collect import ACCESS_SCOPE
from tests.hub.conftest import needs_user_servers
from tests.hub.test_spawn import _start_server, _stop_server
from tests.teach.notebooks import sleepy_notebook
from tests.teach.test_collect import submitted_notebook

pytestmark = [pytest.mark.slow, *needs_user_servers]


def collect(*args, token: str):
    return CliRunner().invoke(app, ["teach", "collect", *map(str, args)],
                              env={"COLUMNS": "200", "JUPYTERHUB_API_TOKEN": token})


def test_an_instructor_collects_the_class_through_the_hub(workbench, tmp_path):
    manager = {"Authorization": f"token {workbench.manager_token}"}
    for student in ("ana", "bob"):
        assert httpx.post(f"{workbench.url}/hub/api/users/{student}", headers=manager).status_code == 201
    assert httpx.post(f"{workbench.url}/hub/api/groups/students/users", json={"users": ["ana", "bob"]},
                      headers=manager).status_code == 200
    instructor = up.user_token(workbench, "instructor", "collect test")
    assert _start_server(workbench, "ana", instructor, "cpu-2").status_code in (201, 202)

    # ana saves her work in her own home, through her own server, as JupyterLab does
    ana = {"Authorization": f"token {up.user_token(workbench, 'ana', 'collect test')}"}
    contents = f"{workbench.url}/user/ana/api/contents/submissions"
    assert httpx.put(contents, json={"type": "directory"}, headers=ana).status_code == 201
    notebook = submitted_notebook({"twice": 4, "nrmse": 0.0421})
    saved = httpx.put(f"{contents}/sleepy.ipynb", headers=ana, timeout=60,
                      json={"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(notebook))})
    assert saved.status_code == 201, saved.text

    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student\nana\nbob\nresearcher\nzed\n")
    result = collect(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", workbench.url, "--out",
                     tmp_path / "out", "--start-servers", token=instructor)
    assert result.exit_code == 1, result.output
    with (tmp_path / "out" / "collected.csv").open(newline="") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "ana": "submitted", "bob": "no submission", "researcher": "refused", "zed": "unknown student"}
    assert (rows["ana"]["record:twice"], rows["ana"]["record:nrmse"]) == ("4", "0.0421")
    assert rows["ana"]["modified"] == saved.json()["last_modified"]
    assert nbformat.read(str(tmp_path / "out" / "ana" / "sleepy.ipynb"), as_version=4) == notebook
    assert rows["bob"]["detail"] == "no submissions/sleepy.ipynb in bob's home"  # bob's server was started for it
    assert rows["researcher"]["detail"].endswith("is researcher in the students group?")  # not in the class

    researcher = up.user_token(workbench, "researcher", "collect test")
    refused = collect(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", workbench.url, "--out",
                      tmp_path / "refused", token=researcher)
    assert refused.exit_code == 2, refused.output
    assert f"the token of researcher lacks the scope {ACCESS_SCOPE}" in refused.stderr
    assert not (tmp_path / "refused").exists()
    for student in ("ana", "bob"):
        _stop_server(workbench, student, instructor)
