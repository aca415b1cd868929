"""Reading mode in a real ``jupyter server`` process: Voilà dashboards and nothing that runs the user's code.

The server runs with the options :func:`cloudmri_jupyter.reading.reading_mode_args` gives the hub, against the
real service. A normal server started the same way but without those options shows that each refusal comes from
reading mode, and that the websocket probe would see code run if it did.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
import nbformat
import pytest
import websocket
from cloudmri_jupyter.reading import (
    ALLOWED_PATHS,
    EXTENSION,
    VOILA_MESSAGE_TYPES,
    ReadingAuthorizer,
    _OutsideReadingPaths,
    reading_mode_args,
)
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from cloudmri_kernel.client import Client
from cloudmri_kernel.processes import free_port
from cloudmri_kernel.service.testing import create_token
from tests.conftest import REPO
from tests.extensions.conftest import BASE_URL, SERVER_CONFIG, JupyterServerProcess

READING_APP = REPO / "notebooks" / "apps" / "reading.ipynb"
TITLE = "Cloud-MRI reading room"
TOKEN_VARIABLES = ("CLOUDMRI_SERVICE_URL", "CLOUDMRI_SERVICE_TOKEN", "CLOUDMRI_SERVICE_TOKEN_FILE",
                   "JUPYTERHUB_API_TOKEN")

# A dashboard whose kernel answers comms: when a browser opens a "cloudmri_probe" comm and sends it a message,
# the kernel writes the message's data to MARKER. It shows that comm messages reach the kernel on the websocket.
PROBE_CODE = """\
import json
from pathlib import Path


def _opened(comm, open_msg):
    @comm.on_msg
    def _received(msg):
        Path({marker!r}).write_text(json.dumps(msg["content"]["data"]))
        comm.send({{"received": True}})


get_ipython().kernel.comm_manager.register_target("cloudmri_probe", _opened)
print("probe ready")
"""


def root_dir_of(args: list[str]) -> str:
    [root] = [a.split("=", 1)[1] for a in args if a.startswith("--ServerApp.root_dir=")]
    return root


def server_args(apps: Path) -> list[str]:
    """:func:`reading_mode_args` for ``apps``, less the root directory, which JupyterServerProcess sets itself."""
    args = reading_mode_args(apps)
    assert root_dir_of(args) == str(apps.resolve())
    return [a for a in args if not a.startswith("--ServerApp.root_dir=")]


# ---------------------------------------------------------------------------------------------------------------
# Without a server


def test_the_options_set_the_authorizer_the_extension_the_filter_and_the_reading_app(tmp_path):
    args = reading_mode_args(tmp_path / "apps")
    assert f"--ServerApp.jpserver_extensions={EXTENSION}=True" in args
    assert "--ServerApp.jpserver_extensions=voila.server_extension=True" in args
    assert "--ServerApp.authorizer_class=cloudmri_jupyter.reading.ReadingAuthorizer" in args
    assert root_dir_of(args) == str((tmp_path / "apps").resolve())
    assert "--ServerApp.default_url=/voila/render/reading.ipynb" in args
    assert [a.split("=", 1)[1] for a in args if a.startswith("--MappingKernelManager.allowed_message_types=")] == \
        list(VOILA_MESSAGE_TYPES)
    assert "execute_request" not in VOILA_MESSAGE_TYPES
    triage = reading_mode_args(tmp_path, "triage/today.ipynb")
    assert "--ServerApp.default_url=/voila/render/triage/today.ipynb" in triage


@pytest.mark.parametrize("app", ["/etc/x.ipynb", "../x.ipynb", "a/../../x.ipynb"])
def test_the_default_app_must_be_inside_the_apps_folder(tmp_path, app):
    with pytest.raises(ValueError, match="inside the apps folder"):
        reading_mode_args(tmp_path, app)


@pytest.mark.parametrize(("path", "routed"), [
    ("/user/rita/", True), ("/user/rita", True), ("/user/rita/voila/render/reading.ipynb", True),
    ("/user/rita/api/kernels/0b7c5e0e-0c54-4b1e-9e51-5f3b0e0d1a2b/channels", True),
    ("/user/rita/api/contents/reading.ipynb", True), ("/user/rita/cloudmri/api/datasets", True),
    ("/user/rita/lab", False), ("/user/rita/lab/api/extensions", False), ("/user/rita/tree", False),
    ("/user/rita/notebooks/x.ipynb", False), ("/user/rita/api/terminals", False), ("/user/rita/terminals/1", False),
    ("/user/rita/api/nbconvert", False), ("/user/rita/nbconvert/html/x.ipynb", False), ("/user/rita/lsp/ws/x", False),
    ("/user/rita/api/shutdown", False), ("/user/rita/files/x", False), ("/user/rita/apis", False),
    ("/user/rita/api/kernelsx", False), ("/user/ritax/voila", False), ("/user/other/voila", False), ("/lab", False),
])
def test_only_the_reading_paths_are_routed(path, routed):
    request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"),
                                headers=HTTPHeaders({"Host": "127.0.0.1"}))
    assert (_OutsideReadingPaths("/user/rita/").match(request) is None) == routed, ALLOWED_PATHS


def test_the_reading_app_is_stored_without_outputs():
    notebook = nbformat.read(READING_APP, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert notebook.cells[0].source.startswith(f"# {TITLE}")
    assert "import cloudmri_kernel as cm" in code[0].source and "ReadingRoom(client)" in code[0].source


def run_reading_app(env: dict[str, str], tmp_path: Path) -> list[dict]:
    """Execute the reading app as Voilà would (a fresh kernel, every cell) and return its outputs."""
    out = tmp_path / "executed.ipynb"
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--ExecutePreprocessor.kernel_name=python3", "--ExecutePreprocessor.timeout=120",
                    f"--output={out}", str(READING_APP)], env=env, check=True, capture_output=True, timeout=180)
    return [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]


def shown_text(outputs: list[dict]) -> str:
    return " ".join(str(o.get("data", {}).get("text/html", "")) + str(o.get("text", "")) for o in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["no token", "service down"])
def test_the_reading_app_says_what_is_wrong_without_a_traceback(tmp_path, problem):
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
    if problem == "service down":
        env.update({"CLOUDMRI_SERVICE_URL": f"http://127.0.0.1:{free_port()}", "CLOUDMRI_SERVICE_TOKEN": "t0ken"})
    outputs = run_reading_app(env, tmp_path)
    assert [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"] == []
    text = shown_text(outputs)
    assert "The worklist cannot be shown right now." in text
    assert ("no token" if problem == "no token" else "cannot reach the Cloud-MRI service") in text


# ---------------------------------------------------------------------------------------------------------------
# A reading-mode server against the real service


@pytest.fixture(scope="module")
def probe_marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("probe") / "comm-received.json"


@pytest.fixture(scope="module")
def reading(service, tmp_path_factory, probe_marker):
    """Alice's server in reading mode; its apps: the reading app and the comm probe."""
    state = tmp_path_factory.mktemp("reading")
    apps = state / "root"  # JupyterServerProcess's root directory
    apps.mkdir()
    shutil.copy(READING_APP, apps / READING_APP.name)
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE_CODE.format(marker=str(probe_marker)))])
    probe.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(probe, apps / "probe.ipynb")
    with JupyterServerProcess(service.env, state, base_url=BASE_URL, config_path=[SERVER_CONFIG],
                              args=server_args(apps)) as server:
        yield server


@pytest.fixture(scope="module")
def normal(service, tmp_path_factory):
    """The same server without reading mode."""
    with JupyterServerProcess(service.env, tmp_path_factory.mktemp("normal"), base_url=BASE_URL,
                              config_path=[SERVER_CONFIG]) as server:
        yield server


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=120.0, trust_env=False) as client:
        yield client


def render(server: JupyterServerProcess, http: httpx.Client, app: str) -> tuple[str, str]:
    """GET the Voilà page of ``app``; its HTML and the ID of the kernel Voilà started for it."""
    page = http.get(f"{server.url}voila/render/{app}", headers=server.headers())
    assert page.status_code == 200, page.text[:2000]
    [kernel_id] = set(re.findall(r'"kernelId": "([0-9a-f-]{36})"', page.text))
    return page.text, kernel_id


def channels(server: JupyterServerProcess, kernel_id: str) -> websocket.WebSocket:
    url = f"{server.url.replace('http://', 'ws://')}api/kernels/{kernel_id}/channels?session_id={uuid4()}"
    # a short timeout: the server pings every 30 s, and each ping would restart a longer one
    return websocket.create_connection(url, header=[f"Authorization: token {server.token}"], timeout=5)


def send(ws: websocket.WebSocket, msg_type: str, content: dict, channel: str = "shell") -> str:
    """Send a kernel message as a browser does (JSON, with its channel); its msg_id."""
    msg_id = uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": msg_type, "session": uuid4().hex, "username": "rita",
                   "date": datetime.now(UTC).isoformat(), "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": []}))
    return msg_id


def receive_until(ws: websocket.WebSocket, parent_id: str, msg_type: str, timeout: float = 60.0) -> list[dict]:
    """Messages from the kernel, until the one of ``msg_type`` that answers ``parent_id`` (included)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.recv()
        if isinstance(frame, bytes):  # messages with binary buffers: none of ours
            continue
        msg = json.loads(frame)
        seen.append(msg)
        if msg["msg_type"] == msg_type and msg["parent_header"].get("msg_id") == parent_id:
            return seen
    raise AssertionError(f"no {msg_type} to {parent_id} within {timeout} s; got {[m['msg_type'] for m in seen]}")


def execute_request(code: str) -> dict:
    return {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False,
            "stop_on_error": True}


@pytest.mark.slow
def test_the_reading_app_renders_the_worklist(reading, http, service, phantom_mrd):
    with Client(service.service.url, service.token) as alice:
        dataset = alice.upload(phantom_mrd)
    with Client(service.service.url, create_token(service.service.env, "ada", "siteA", ["admin"])) as ada:
        ada.assign(dataset["id"], "alice", priority=2)
    home = http.get(reading.url, headers=reading.headers(), follow_redirects=False)
    assert home.status_code == 302 and home.headers["location"].startswith(f"{BASE_URL}voila/render/reading.ipynb")
    html, _ = render(reading, http, "reading.ipynb")
    assert TITLE in html
    shown = html.replace("\\u003c", "<").replace("\\u003e", ">")  # outputs are embedded as JSON strings
    assert "Signed in as <b>alice</b>: 1 study on your worklist: 1 assigned." in shown  # rendered by the server
    assert "application/vnd.jupyter.widget-view+json" in html  # the reading room widget (the browser tests use it)
    assert "Traceback" not in html and "cannot be shown" not in html


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "lab", None), ("GET", "lab/tree/reading.ipynb", None), ("GET", "tree", None),
    ("GET", "notebooks/reading.ipynb", None), ("GET", "lab/api/extensions", None),
    ("POST", "lab/api/extensions", {"cmd": "install", "extension_name": "x"}),
    ("POST", "api/kernels", {"name": "python3"}),
    ("POST", "api/sessions", {"path": "x.ipynb", "type": "notebook", "kernel": {"name": "python3"}}),
    ("POST", "api/terminals", {}), ("GET", "terminals/1", None), ("GET", "api/terminals", None),
    ("PUT", "api/contents/x.ipynb", {"type": "notebook", "content": nbformat.v4.new_notebook()}),
    ("POST", "api/contents", {"type": "notebook"}), ("DELETE", "api/contents/reading.ipynb", None),
    ("POST", "api/shutdown", None),
])
def test_what_could_run_code_is_refused(reading, http, method, path, body):
    reply = http.request(method, reading.url + path, headers=reading.headers(), json=body, follow_redirects=False)
    assert reply.status_code in (403, 404), (reply.status_code, reply.text[:300])
    if path in ("api/kernels", "api/sessions") or path.startswith("api/contents"):
        assert reply.status_code == 403  # the route exists (reading it is allowed); the authorizer refuses
    assert (reading.state_dir / "root" / "reading.ipynb").exists()
    assert not (reading.state_dir / "root" / "x.ipynb").exists()


@pytest.mark.slow
def test_reading_is_still_allowed(reading, http):
    contents = http.get(reading.url + "api/contents", headers=reading.headers())
    assert contents.status_code == 200
    assert {item["name"] for item in contents.json()["content"]} >= {"reading.ipynb", "probe.ipynb"}
    assert http.get(reading.url + "api/status", headers=reading.headers()).status_code == 200
    assert http.get(reading.url + "voila", headers=reading.headers()).status_code == 200


@pytest.mark.slow
def test_the_voila_kernel_gets_comms_but_no_execute_request(reading, http, probe_marker):
    _, kernel_id = render(reading, http, "probe.ipynb")
    executed = Path("/tmp") / f"cloudmri-reading-{secrets.token_hex(8)}"
    ws = channels(reading, kernel_id)
    try:
        execute_id = send(ws, "execute_request", execute_request(f"open({str(executed)!r}, 'w').write('ran')"))
        comm_id = uuid4().hex
        send(ws, "comm_open", {"comm_id": comm_id, "target_name": "cloudmri_probe", "data": {}})
        msg_id = send(ws, "comm_msg", {"comm_id": comm_id, "data": {"from": "the browser"}})
        # the kernel handles shell messages in order: once it answers this, it would have run the execute_request
        info_id = send(ws, "kernel_info_request", {})
        seen = receive_until(ws, info_id, "kernel_info_reply")
        if not any(m["msg_type"] == "comm_msg" and m["parent_header"].get("msg_id") == msg_id for m in seen):
            seen += receive_until(ws, msg_id, "comm_msg")  # iopub may come after the shell reply
        deadline = time.monotonic() + 30
        while not probe_marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        ws.close()
    assert json.loads(probe_marker.read_text()) == {"from": "the browser"}  # comm_open and comm_msg got through
    assert [m["content"]["data"] for m in seen if m["msg_type"] == "comm_msg"
            and m["parent_header"].get("msg_id") == msg_id] == [{"received": True}]  # the kernel answered the comm
    time.sleep(0.5)
    assert not executed.exists()
    assert [m["msg_type"] for m in seen if m["parent_header"].get("msg_id") == execute_id] == []
    assert 'Received message of type "execute_request", which is not allowed' in reading.log_path.read_text()


@pytest.mark.slow
def test_a_normal_server_starts_kernels_and_runs_code_from_the_websocket(normal, http, tmp_path):
    assert http.get(normal.url + "lab", headers=normal.headers()).status_code == 200
    started = http.post(normal.url + "api/kernels", headers=normal.headers(), json={"name": "python3"})
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    executed = tmp_path / "executed"
    ws = channels(normal, kernel_id)
    try:
        execute_id = send(ws, "execute_request", execute_request(f"open({str(executed)!r}, 'w').write('ran')"))
        receive_until(ws, execute_id, "execute_reply")
    finally:
        ws.close()
        http.delete(f"{normal.url}api/kernels/{kernel_id}", headers=normal.headers())
    assert executed.read_text() == "ran"  # the probe above would see code run


@pytest.mark.slow
def test_the_server_stops_rather_than_start_with_another_authorizer(service, tmp_path):
    apps = tmp_path / "root"
    apps.mkdir()
    args = [*(a for a in server_args(apps) if not a.startswith("--ServerApp.authorizer_class=")),
            "--ServerApp.authorizer_class=jupyterhub.singleuser.extension.JupyterHubAuthorizer"]
    with pytest.raises(RuntimeError, match="Reading mode cannot be set up"):
        with JupyterServerProcess(service.env, tmp_path, base_url=BASE_URL, config_path=[SERVER_CONFIG], args=args):
            pass


def test_the_authorizer_refuses_everything_where_the_extension_did_not_load():
    class Handler:
        settings: dict = {}

    assert ReadingAuthorizer().is_authorized(Handler(), object(), "read", "contents") is False
