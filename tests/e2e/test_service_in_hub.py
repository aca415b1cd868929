"""The API service as a JupyterHub-managed service, with a real JupyterHub 5.5 and configurable-http-proxy.

Proves the hub side of the service's authentication: kernels' tokens (``Authorization: token``) are checked
with the hub and carry the Cloud-MRI custom scopes their roles give; the site comes from the ``site-NAME``
group; a browser signs in through the hub's OAuth provider and gets images with its cookie; the service answers
under the prefix the hub's proxy forwards (``/services/cloudmri/``). The hub uses the dummy authenticator here,
for tests only."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloudmri_kernel.client import Client, ServiceError
from cloudmri_kernel.processes import free_port
from cloudmri_kernel.service.identity import ROLE_SCOPES, SCOPES

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PROXY.exists(), reason="needs configurable-http-proxy from npm (./workbench setup "
                       "installs it; present in CI)"),
]

CONFIG = '''
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.pid_file = "{state}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allow_all = True
c.JupyterHub.custom_scopes = {custom_scopes!r}
c.JupyterHub.load_groups = {{"site-siteA": {{"users": ["alice", "rita"]}}, "site-siteB": {{"users": ["bob"]}}}}
c.JupyterHub.load_roles = [
    {{"name": "researcher", "scopes": {researcher!r}, "users": ["alice", "bob"]}},
    {{"name": "radiologist", "scopes": {radiologist!r}, "users": ["rita"]}},
    {{"name": "tester", "scopes": ["admin:users", "tokens", "admin:groups"], "services": ["tester"]}},
]
c.JupyterHub.services = [
    {{"name": "tester", "api_token": {tester_token!r}}},
    {{
        "name": "cloudmri",
        "url": "http://127.0.0.1:{service_port}",
        "command": [{python!r}, "-m", "cloudmri_kernel", "service", "--port", "{service_port}", "--workers", "0"],
        "environment": {{"CLOUDMRI_DATA_DIR": "{state}/cloudmri", "CLOUDMRI_UPLOAD_CHUNK_MB": "1"}},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": {all_scopes!r},
    }},
]
'''


def _scopes(names) -> list[str]:
    return [f"custom:cloudmri:{name}" for name in names]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    state = tmp_path_factory.mktemp("hub")
    port, password, tester = free_port(), secrets.token_urlsafe(12), secrets.token_hex(16)
    config = CONFIG.format(
        port=port, hub_port=free_port(), proxy_api_port=free_port(), service_port=free_port(), proxy=str(PROXY),
        state=state, password=password, tester_token=tester, python=sys.executable,
        custom_scopes={scope: {"description": text} for scope, text in zip(_scopes(SCOPES), SCOPES.values(),
                                                                         strict=True)},
        researcher=["self", "access:services!service=cloudmri", *_scopes(ROLE_SCOPES["researcher"])],
        radiologist=["self", "access:services!service=cloudmri", *_scopes(ROLE_SCOPES["radiologist"])],
        all_scopes=_scopes(SCOPES))
    (state / "jupyterhub_config.py").write_text(config)
    log = open(state / "hub.log", "wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", "jupyterhub_config.py"],
                               cwd=state, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/services/cloudmri/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterHub did not start: " + (state / "hub.log").read_text()[-3000:])
            time.sleep(0.5)
        admin = httpx.Client(base_url=f"{url}/hub/api", headers={"Authorization": f"token {tester}"}, timeout=30)
        tokens = {}
        for user in ("alice", "bob", "rita"):
            admin.post(f"/users/{user}")
            reply = admin.post(f"/users/{user}/tokens", json={"note": "kernel"})
            assert reply.status_code == 201, reply.text
            tokens[user] = reply.json()["token"]
        yield url, tokens, password
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        shutil.rmtree(state / "cloudmri", ignore_errors=True)


def test_kernel_tokens_are_checked_with_the_hub(hub, phantom_mrd):
    url, tokens, _ = hub
    service = f"{url}/services/cloudmri"
    alice, bob, rita = (Client(service, tokens[u], backoff=0.01) for u in ("alice", "bob", "rita"))
    who = alice.whoami()
    assert (who["user"], who["site"]) == ("alice", "siteA")
    assert who["scopes"] == sorted(ROLE_SCOPES["researcher"])
    assert rita.whoami()["scopes"] == sorted(ROLE_SCOPES["radiologist"])
    dataset = alice.upload(phantom_mrd)
    assert dataset["sha256"] == hashlib.sha256(phantom_mrd.read_bytes()).hexdigest()
    with pytest.raises(ServiceError) as other_site:
        bob.dataset(dataset["id"])
    assert other_site.value.status == 403
    with pytest.raises(ServiceError) as radiologist:
        rita.download_raw(dataset["id"], phantom_mrd.parent / "never.h5")
    assert radiologist.value.status == 403
    assert httpx.get(f"{service}/api/v1/whoami", headers={"Authorization": "token forged"}).status_code == 401


def test_browser_signs_in_through_the_hub_and_views_images(hub, phantom_mrd):
    url, tokens, password = hub
    service = f"{url}/services/cloudmri"
    alice = Client(service, tokens["alice"], backoff=0.01)
    dataset = alice.upload(phantom_mrd)
    job = alice.wait(alice.submit(dataset["id"], {"method": "ifft"})["id"], timeout=120)
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as browser:
        assert browser.get("/services/cloudmri/api/v1/whoami").status_code == 401
        assert browser.get("/hub/login").status_code == 200
        xsrf = browser.cookies.get("_xsrf")
        browser.post("/hub/login", data={"username": "rita", "password": password, "_xsrf": xsrf})
        landed = browser.get("/services/cloudmri/oauth_login",
                             params={"next": "/services/cloudmri/api/v1/whoami"})
        assert landed.status_code == 200, landed.text
        assert landed.json()["user"] == "rita" and landed.json()["site"] == "siteA"
        tile = browser.get(f"/services/cloudmri/api/v1/series/{job['series_id']}/images/0.png")
        assert tile.status_code == 200 and tile.content[:8] == b"\x89PNG\r\n\x1a\n"
        cookie = next(c for c in browser.cookies.jar if c.name == "cloudmri-session")
        assert cookie.path == "/services/cloudmri/"
        # a signed-in browser cannot be made to change anything with its cookie alone
        assert browser.post("/services/cloudmri/api/v1/uploads", json={
            "filename": "x", "size": 1, "sha256": "a" * 64}).status_code == 401
