"""User servers on the real hub: each runs as its own system account with the Cloud-MRI kernel and the
profile it may choose, and its kernels cannot read the platform's data directory, keys or store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from cloudmri_kernel import up
from tests.hub.conftest import needs_user_servers
from tests.hub.kernels import run_code

pytestmark = [pytest.mark.slow, *needs_user_servers]


def _start_server(bench, user: str, token: str, profile: str) -> httpx.Response:
    reply = httpx.post(f"{bench.url}/hub/api/users/{user}/server", json={"profile": profile},
                       headers={"Authorization": f"token {token}"}, timeout=180)
    if reply.status_code in (201, 202):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            model = httpx.get(f"{bench.url}/hub/api/users/{user}", headers={"Authorization": f"token {token}"}).json()
            if model["servers"].get("", {}).get("ready"):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"{user}'s server did not become ready")
    return reply


def _stop_server(bench, user: str, token: str) -> None:
    headers = {"Authorization": f"token {token}"}
    httpx.delete(f"{bench.url}/hub/api/users/{user}/server", headers=headers, timeout=60)
    deadline = time.monotonic() + 60
    while httpx.get(f"{bench.url}/hub/api/users/{user}", headers=headers).json()["servers"]:
        assert time.monotonic() < deadline, f"{user}'s server did not stop"
        time.sleep(0.3)


def test_a_researchers_kernel_runs_as_its_own_account_and_cannot_read_the_platform(workbench):
    token = up.user_token(workbench, "researcher", "spawn test")
    assert _start_server(workbench, "researcher", token, "cpu-2").status_code in (201, 202)
    data_dir = workbench.hub_dir.parent
    secrets_ = sorted(str(p) for p in data_dir.rglob("*") if p.is_file())
    assert any("/keys/" in p for p in secrets_) and any("manager.token" in p for p in secrets_)
    code = f"""
import os, pwd
print("account", pwd.getpwuid(os.getuid()).pw_name)
print("datasets", sorted(d["filename"] for d in cm.datasets()))
print("cuda", repr(os.environ["CUDA_VISIBLE_DEVICES"]), "cores", len(os.sched_getaffinity(0)))
for path in {[str(data_dir)] + secrets_!r}:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, "rb").read(1)
        print("READ", path)
    except PermissionError:
        pass
"""
    result = run_code(f"{workbench.url}/user/researcher/", token, code)
    assert result.error is None, result.error
    lines = result.stdout.splitlines()
    assert lines[0] == f"account {os.environ.get('CLOUDMRI_SYSTEM_PREFIX', '')}researcher"
    assert "phantom_full.h5" in lines[1]
    assert lines[2] == f"cuda '' cores {min(2, len(os.sched_getaffinity(0)))}"
    assert not [line for line in lines if line.startswith("READ")], "a kernel read the platform's files"
    dashboard = httpx.get(f"{workbench.url}/user/researcher/voila/render/apps/reading.ipynb", timeout=120,
                          headers={"Authorization": f"token {token}"})
    assert dashboard.status_code == 200 and "Cloud-MRI reading room" in dashboard.text  # researchers may too
    _stop_server(workbench, "researcher", token)


def test_gpu_profiles_are_offered_and_allowed_only_to_gpu_groups(workbench):
    researcher = up.user_token(workbench, "researcher", "profile test")
    refused = _start_server(workbench, "researcher", researcher, "gpu-1")
    assert refused.status_code == 400
    assert "not available to your groups" in refused.json()["message"]

    admin = up.user_token(workbench, "admin", "profile test")
    assert _start_server(workbench, "admin", admin, "gpu-1").status_code in (201, 202)
    result = run_code(f"{workbench.url}/user/admin/", admin,
                      "import os; print(os.environ['CLOUDMRI_PROFILE'], repr(os.environ['CUDA_VISIBLE_DEVICES']))")
    assert result.stdout.split() == ["gpu-1", "'0'"]


def test_a_server_that_cannot_start_reports_why(workbench):
    prefix = os.environ["CLOUDMRI_SYSTEM_PREFIX"]
    manager = {"Authorization": f"token {workbench.manager_token}"}
    subprocess.run(["groupadd", f"{prefix}clash"], check=True)  # useradd --user-group will refuse the account
    try:
        assert httpx.post(f"{workbench.url}/hub/api/users/clash", headers=manager).status_code == 201
        token = up.user_token(workbench, "clash", "failure test")
        reply = _start_server(workbench, "clash", token, "cpu-2")
        assert reply.status_code == 503
        message = reply.json()["message"]
        assert f"could not create the system account {prefix}clash" in message and "exists" in message
        assert httpx.get(f"{workbench.url}/hub/health").status_code == 200
    finally:
        subprocess.run(["groupdel", f"{prefix}clash"], check=False)


def _service_pids(bench) -> set[int]:
    pids = set()
    for child in psutil.Process(bench.hub.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and {"cloudmri_kernel", "service"} <= set(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:  # ended while we looked
            pass
    return pids


def test_the_hub_restarts_a_crashed_api_service_and_kernels_reconnect(workbench):
    token = up.user_token(workbench, "researcher", "crash test")
    assert _start_server(workbench, "researcher", token, "cpu-2").status_code in (201, 202)
    (before,) = _service_pids(workbench)
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        pids = _service_pids(workbench)
        try:
            healthy = httpx.get(f"{workbench.url}/services/cloudmri/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and pids and before not in pids:
            break
        assert time.monotonic() < deadline, "the hub did not restart the API service"
        time.sleep(0.5)
    result = run_code(f"{workbench.url}/user/researcher/", token, "print(len(cm.datasets()))")
    assert result.error is None and int(result.stdout) >= 3
    _stop_server(workbench, "researcher", token)


def test_a_radiologist_gets_the_reading_app_and_no_way_to_run_code(workbench):
    token = up.user_token(workbench, "radiologist", "reading test")
    assert _start_server(workbench, "radiologist", token, "cpu-2").status_code in (201, 202)
    headers = {"Authorization": f"token {token}"}
    server = f"{workbench.url}/user/radiologist/"
    page = httpx.get(server, headers=headers, follow_redirects=True, timeout=120)
    assert page.status_code == 200 and "/voila/render/reading.ipynb" in str(page.url)
    assert "Cloud-MRI reading room" in page.text  # and the demo worklist, via the API:
    shown = page.text.replace("\\u003c", "<").replace("\\u003e", ">")  # outputs are embedded as JSON strings
    assert re.search(r"Signed in as <b>radiologist</b>: [34] studies on your worklist: [34] assigned", shown)
    assert httpx.get(f"{server}lab", headers=headers).status_code in (403, 404)
    assert httpx.post(f"{server}api/kernels", json={"name": "cloudmri"}, headers=headers).status_code == 403
    assert httpx.get(f"{server}api/terminals", headers=headers).status_code in (403, 404)
    _stop_server(workbench, "radiologist", token)


def test_an_instructor_manages_the_class_servers_and_no_others(workbench):
    manager = {"Authorization": f"token {workbench.manager_token}"}
    assert httpx.post(f"{workbench.url}/hub/api/users/student1", headers=manager).status_code == 201
    assert httpx.post(f"{workbench.url}/hub/api/groups/students/users", json={"users": ["student1"]},
                      headers=manager).status_code == 200
    instructor = up.user_token(workbench, "instructor", "class test")
    assert _start_server(workbench, "student1", instructor, "cpu-2").status_code in (201, 202)
    result = run_code(f"{workbench.url}/user/student1/", instructor, "import getpass; print(getpass.getuser())")
    assert result.stdout.strip() == f"{os.environ['CLOUDMRI_SYSTEM_PREFIX']}student1"
    _stop_server(workbench, "student1", instructor)
    refused = httpx.post(f"{workbench.url}/hub/api/users/researcher/server", json={"profile": "cpu-2"},
                         headers={"Authorization": f"token {instructor}"})
    assert refused.status_code in (403, 404)
