"""`cloudmri teach collect` against real Jupyter servers (one per student, under ``/user/NAME/`` as behind a hub).

The hub is a stand-in: the two user endpoints that collecting reads (``GET /hub/api/user``,
``GET /hub/api/users/NAME``), with JupyterHub 5's replies: 404 for a user that does not exist or that the token's
filtered scopes do not cover, 403 naming the scopes for a token without them. The end-to-end test on the real hub,
with an instructor's, a student's and a researcher's tokens, is ``tests/hub/test_collect.py``.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nbformat
import pytest
from nbformat import v4
from typer.testing import CliRunner

import cloudmri_kernel.cli_teach  # noqa: F401 - registers `teach` on the app
from cloudmri_kernel.cli import app
from cloudmri_kernel.teach.collect import ACCESS_SCOPE, collect_class
from cloudmri_kernel.teach.records import RECORD_MIMETYPE
from tests.extensions.conftest import JupyterServerProcess
from tests.teach.notebooks import sleepy_notebook

INSTRUCTOR = secrets.token_hex(16)
OTHER_CLASS = secrets.token_hex(16)  # an instructor of another class: the hub shows users, servers refuse
RESEARCHER = secrets.token_hex(16)


class StandInHub:
    """``/hub/api/user`` and ``/hub/api/users/NAME`` on 127.0.0.1; ``requests`` lists the paths asked for."""

    def __init__(self, servers: dict[str, str | None]):
        self.servers = servers  # user name: the URL of their running server, or None when it is stopped
        self.tokens = {INSTRUCTOR: ("teacher", [ACCESS_SCOPE, "read:users!group=students"]),
                       OTHER_CLASS: ("teacher2", ["access:servers!group=other", "read:users"]),
                       RESEARCHER: ("rita", ["access:servers!user=rita", "read:users!user=rita",  # "self"
                                             "servers!user=rita", "users:activity!user=rita"])}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append(self.path)
                owner = hub.tokens.get(self.headers.get("Authorization", "").removeprefix("token "))
                if owner is None:
                    return self.reply(403, {"status": 403, "message": "Missing or invalid credentials."})
                name, scopes = owner
                if self.path == "/hub/api/user":
                    return self.reply(200, {"kind": "user", "name": name, "scopes": scopes})
                user = self.path.removeprefix("/hub/api/users/")
                if not any(s == "read:users" or s.startswith("read:users!group=") for s in scopes):
                    return self.reply(403, {"status": 403, "message": "Action is not authorized with current "
                                            "scopes; requires any of [read:users, read:users:name, read:servers]"})
                if user not in hub.servers:
                    return self.reply(404, {"status": 404, "message": "No access to resources or resources not "
                                            "found"})
                url = hub.servers[user]
                servers = {} if url is None else {"": {"name": "", "ready": True, "url": url}}
                return self.reply(200, {"kind": "user", "name": user, "servers": servers})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self.thread.start()
        return self

    def __exit__(self, *_exc_info) -> None:
        self.http.shutdown()
        self.http.server_close()


def submitted_notebook(values: dict[str, object]) -> nbformat.NotebookNode:
    """A notebook as a student saves it after running the exercises: one record output per value."""
    cell = v4.new_code_cell("record(...)")
    cell.outputs = [v4.new_output("display_data", data={RECORD_MIMETYPE: {"name": name, "value": value},
                                                         "text/plain": f"recorded {name} = {value!r}"})
                    for name, value in values.items()]
    return v4.new_notebook(cells=[v4.new_markdown_cell("# Test tutorial"), cell])


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """ana's and bob's Jupyter servers (tokens: the instructor's), cara known but stopped, on a stand-in hub."""
    state = tmp_path_factory.mktemp("servers")
    servers = {}
    for name in ("ana", "bob"):
        server = JupyterServerProcess(dict(os.environ), state / name, base_url=f"/user/{name}/")
        server.token = INSTRUCTOR  # a hub token is accepted by every server the token may access
        servers[name] = server
    try:
        for server in servers.values():
            server.start()
        home = state / "ana" / "root"
        (home / "submissions").mkdir()
        nbformat.write(submitted_notebook({"twice": 4, "label": "sense", "nrmse": 0.0421}),
                       str(home / "submissions" / "sleepy.ipynb"))
        (home / "notes").mkdir()
        with StandInHub({"ana": servers["ana"].url, "bob": servers["bob"].url, "cara": None}) as hub:
            yield hub, home
    finally:
        for server in servers.values():
            server.stop()


def invoke(*args, token: str = INSTRUCTOR):
    return CliRunner().invoke(app, ["teach", "collect", *map(str, args)],
                              env={"COLUMNS": "200", "JUPYTERHUB_API_TOKEN": token})


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def test_collect_saves_submissions_with_their_records_and_says_why_others_are_missing(classroom, tmp_path):
    hub, home = classroom
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student,repeat\nana,1\nbob,2\ncara,3\ndan,\n")
    (tmp_path / "token").write_text(INSTRUCTOR + "\n")
    (tmp_path / "token").chmod(0o600)
    result = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", hub.url, "--out", tmp_path / "out",
                    "--token-file", tmp_path / "token", token="")
    assert result.exit_code == 1, result.output
    assert "3 of 4 students' notebooks were not collected" in result.stderr
    assert "bob (no submission), cara (not running), dan (unknown student)" in result.stderr

    saved = tmp_path / "out" / "ana" / "sleepy.ipynb"
    assert saved.read_bytes() == (home / "submissions" / "sleepy.ipynb").read_bytes()
    rows = read_csv(tmp_path / "out" / "collected.csv")
    assert list(rows) == ["ana", "bob", "cara", "dan"]
    assert {name: row["status"] for name, row in rows.items()} == {
        "ana": "submitted", "bob": "no submission", "cara": "not running", "dan": "unknown student"}
    ana = rows["ana"]
    assert (ana["notebook"], ana["record:twice"], ana["record:label"], ana["record:nrmse"]) == (
        "ana/sleepy.ipynb", "4", "sense", "0.0421")
    modified = datetime.fromisoformat(ana["modified"].replace("Z", "+00:00")).timestamp()
    assert modified == pytest.approx((home / "submissions" / "sleepy.ipynb").stat().st_mtime, abs=1e-3)
    assert ana["detail"] == ""
    assert rows["bob"]["detail"] == "no submissions/sleepy.ipynb in bob's home"
    assert rows["bob"]["notebook"] == rows["bob"]["record:twice"] == ""
    assert "--start-servers" in rows["cara"]["detail"]
    assert "No access to resources or resources not found" in rows["dan"]["detail"]
    assert not (tmp_path / "out" / "bob").exists()

    page = (tmp_path / "out" / "collected.html").read_text()
    assert '<a href="ana/sleepy.ipynb">ana</a>' in page and "<span>1 submitted</span>" in page
    assert '<span class="status no-submission">no submission</span>' in page
    assert '<td class="num">0.0421</td>' in page and "~/submissions/sleepy.ipynb" in page
    shown = datetime.fromtimestamp(int(modified), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f'<td class="num">{shown}</td>' in page


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("text", b"my answers: 4, sense\n", "not UTF-8 JSON: Expecting value"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8 JSON: 'utf-8' codec can't decode"),
    ("list", b"[1, 2]", "JSON without an nbformat version"),
    ("cells", b'{"nbformat": 4, "nbformat_minor": 5, "cells": [1], "metadata": {}}', "argument of type 'int'"),
    ("schema", b'{"nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "code", "source": 1}], '
               b'"metadata": {}}', "The notebook is invalid"),
])
def test_a_file_that_is_not_a_notebook_is_reported(classroom, tmp_path, name, content, reason):
    hub, home = classroom
    tutorial = sleepy_notebook(tmp_path / f"{name}.ipynb")
    (home / "notes" / f"{name}.ipynb").write_bytes(content)
    (tmp_path / "roster.csv").write_text("student\nana\nbob\n")
    collection = collect_class(tutorial, tmp_path / "roster.csv", hub.url, INSTRUCTOR, "notes/{tutorial}.ipynb",
                               tmp_path / "out")
    ana, bob = collection.submissions
    assert (ana.status, bob.status) == ("not a notebook", "no submission")
    assert ana.detail.startswith(f"notes/{name}.ipynb in ana's home is not a Jupyter notebook ({reason}"), ana.detail
    assert ana.modified is not None and ana.notebook is None
    assert not (tmp_path / "out" / "ana").exists()
    assert "not a notebook" in (tmp_path / "out" / "collected.csv").read_text()


def test_servers_refuse_a_token_without_access_to_the_class(classroom, tmp_path):
    hub, _ = classroom
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student\nana\n")
    [ana] = collect_class(tutorial, tmp_path / "roster.csv", hub.url, OTHER_CLASS, out_dir=tmp_path / "out").submissions
    assert ana.status == "refused"
    assert ana.detail.startswith("ana's server refused the token (403 ")
    assert ana.detail.endswith(f"reading a student's files needs {ACCESS_SCOPE}")


def test_a_token_without_the_scope_is_refused_before_anything_is_read(classroom, tmp_path):
    hub, _ = classroom
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student\nana\n")
    before = len(hub.requests)
    result = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", hub.url, "--out", tmp_path / "out",
                    token=RESEARCHER)
    assert result.exit_code == 2, result.output
    assert f"the token of rita lacks the scope {ACCESS_SCOPE}, which collecting needs" in result.stderr
    assert hub.requests[before:] == ["/hub/api/user"]
    assert not (tmp_path / "out").exists()

    wrong = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", hub.url, token="not-a-token")
    assert wrong.exit_code == 2
    assert "refused the token (403 Missing or invalid credentials.)" in wrong.stderr


def test_a_roster_without_the_student_column_stops_before_the_hub_is_asked(classroom, tmp_path):
    hub, _ = classroom
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("name\nana\n")
    before = len(hub.requests)
    result = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", hub.url, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "no 'student' column (columns: name)" in result.stderr
    assert hub.requests[before:] == [] and not (tmp_path / "out").exists()


def test_no_token_or_a_wrong_hub_url_stops_before_anything_is_read(classroom, tmp_path):
    hub, _ = classroom
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student\nana\n")
    nothing = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", hub.url, token="")
    assert nothing.exit_code == 2 and "no hub token: give --token-file or set JUPYTERHUB_API_TOKEN" in nothing.stderr
    closed = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", "http://127.0.0.1:9")
    assert closed.exit_code == 2 and "cannot reach JupyterHub at http://127.0.0.1:9/" in closed.stderr
    server = hub.servers["ana"].removesuffix("/user/ana/")  # a Jupyter server is not a hub
    wrong = invoke(tutorial, "--class", tmp_path / "roster.csv", "--hub-url", server, "--out", tmp_path / "out")
    assert wrong.exit_code == 2, wrong.output
    assert f"no JupyterHub API at {server}/hub/api/ (404): check --hub-url" in wrong.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("template", ["/etc/{tutorial}.ipynb", "../{tutorial}.ipynb", "{student}.ipynb"])
def test_a_path_outside_the_home_or_with_unknown_placeholders_is_refused(tmp_path, template):
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student\nana\n")
    result = invoke(tutorial, "--class", tmp_path / "roster.csv", "--path", template, "--hub-url",
                    "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "--path" in result.stderr
