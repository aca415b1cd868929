"""`cloudmri up --demo`: the real JupyterHub, proxy and API service, started, used, stopped and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloudmri_kernel.client import Client, ServiceError
from cloudmri_kernel.processes import free_port
from cloudmri_kernel.service.identity import ROLE_SCOPES
from tests.conftest import GRAPPA_FILE

ROOT = Path(__file__).resolve().parents[2]
CLOUDMRI = Path(sys.executable).parent / "cloudmri"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "configurable-http-proxy").exists(),
                       reason="needs configurable-http-proxy from npm (./workbench setup installs it; in CI)"),
]


def _start(data_dir: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen([str(CLOUDMRI), "up", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={k: v for k, v in os.environ.items() if not k.startswith("CLOUDMRI_")})
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith("Ctrl-C stops it"):
            return process, lines
    process.wait()
    raise AssertionError("cloudmri up did not start:\n" + "\n".join(lines))


def _stop(process: subprocess.Popen, hub_dir: Path) -> None:
    pids = [int((hub_dir / name).read_text()) for name in ("jupyterhub.pid", "proxy.pid")
            if (hub_dir / name).exists()]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), "the hub or its proxy outlived cloudmri up"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def _login(url: str, user: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=url, timeout=30)
    browser.get("/hub/login")
    reply = browser.post("/hub/login", data={"username": user, "password": password,
                                             "_xsrf": browser.cookies.get("_xsrf")})
    browser.logged_in = reply.status_code == 302
    return browser


def test_up_demo_serves_every_role_stops_cleanly_and_resumes(tmp_path):
    data_dir, port = tmp_path / "workbench", free_port()
    url = f"http://127.0.0.1:{port}"
    process, lines = _start(data_dir, port)
    hub_dir = data_dir / "hub"
    try:
        assert f"Cloud-MRI Workbench: {url}/" in lines
        passwords = json.loads((hub_dir / "demo-accounts.json").read_text())
        assert (hub_dir / "demo-accounts.json").stat().st_mode & 0o777 == 0o600
        assert any(line.split()[:2] == ["researcher", "password"] and passwords["researcher"] in line
                   for line in lines)

        researcher = _login(url, "researcher", passwords["researcher"])
        assert researcher.logged_in
        datasets = researcher.get("/services/cloudmri/oauth_login", follow_redirects=True,
                                  params={"next": "/services/cloudmri/api/v1/datasets"}).json()
        expected = {"phantom_full.h5", "phantom_grappa_r4.h5", "phantom_cs_r4.h5"}
        if GRAPPA_FILE.exists():
            expected.add(GRAPPA_FILE.name)
        assert {d["filename"] for d in datasets} == expected and {d["site"] for d in datasets} == {"demo"}

        assert not _login(url, "radiologist", "not-the-password").logged_in
        for _ in range(3):  # NativeAuthenticator locks the account after 3 failures
            assert not _login(url, "instructor", "wrong-password!").logged_in
        assert not _login(url, "instructor", passwords["instructor"]).logged_in
        logins = [json.loads(line) for line in (data_dir / "audit" / "audit.jsonl").read_text().splitlines()
                  if '"hub.login"' in line]
        summary = [(e["user"].get("name"), e["event"]["outcome"], e["event"].get("reason", "")) for e in logins]
        assert summary == [("researcher", "success", ""), ("radiologist", "failure", "wrong password"),
                           *[("instructor", "failure", "wrong password")] * 3,
                           ("instructor", "failure", "account locked after repeated failed sign-ins")]
        assert all(e["source"]["ip"] == "127.0.0.1" for e in logins)

        manager = (hub_dir / "manager.token").read_text().strip()
        token = httpx.post(f"{url}/hub/api/users/radiologist/tokens", json={"note": "test"},
                           headers={"Authorization": f"token {manager}"}).json()["token"]
        radiologist = Client(f"{url}/services/cloudmri", token, backoff=0.01)
        assert radiologist.whoami()["scopes"] == sorted(ROLE_SCOPES["radiologist"])
        with pytest.raises(ServiceError) as refused:
            radiologist.download_raw(datasets[0]["id"], tmp_path / "raw.h5")
        assert refused.value.status == 403

        scraper = {"Authorization": f"token {(hub_dir / 'metrics.token').read_text().strip()}"}
        assert (hub_dir / "metrics.token").stat().st_mode & 0o777 == 0o600
        hub_metrics = httpx.get(f"{url}/hub/metrics", headers=scraper)
        assert hub_metrics.status_code == 200 and "jupyterhub_" in hub_metrics.text
        api_metrics = httpx.get(f"{url}/services/cloudmri/api/v1/metrics", headers=scraper)
        assert api_metrics.status_code == 200 and "cloudmri_http_requests_total" in api_metrics.text
        assert httpx.get(f"{url}/hub/metrics").status_code == 403
        assert httpx.get(f"{url}/services/cloudmri/api/v1/datasets", headers=scraper).status_code == 403
    finally:
        _stop(process, hub_dir)

    process, _ = _start(data_dir, port)  # a second `up` resumes with all users and data
    try:
        assert json.loads((hub_dir / "demo-accounts.json").read_text()) == passwords
        again = _login(url, "researcher", passwords["researcher"])
        resumed = again.get("/services/cloudmri/oauth_login", follow_redirects=True,
                            params={"next": "/services/cloudmri/api/v1/datasets"}).json()
        assert sorted(d["id"] for d in resumed) == sorted(d["id"] for d in datasets)
    finally:
        _stop(process, hub_dir)


def test_up_refuses_a_data_dir_it_cannot_write(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # refuses even root, unlike file modes
    result = subprocess.run([str(CLOUDMRI), "up", "--data-dir", str(blocker / "workbench"),
                             "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(errors) == 1 and "the data directory is not writable" in errors[0]
