"""User servers on the real hub: each runs as its own system account with the Cloud-MRI kernel and the
profile it may choose, and its kernels cannot read the platform's data directory, keys or store."""

from __future__ import annotations

import os
import time

import httpx
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
