"""The server extension in a real ``jupyter server`` process, against the real service process.

The extension is enabled the way an installation enables it: by the package's
``jupyter_server_config.d/cloudmri_jupyter.json``. The server runs under a hub-like base URL.
"""

from __future__ import annotations

import hashlib
import json
from http.client import HTTPConnection
from urllib.parse import urlsplit

import httpx
import pytest

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.processes import free_port
from cloudmri_kernel.service.identity import ROLE_SCOPES
from tests.extensions.conftest import BASE_URL, SERVER_CONFIG, JupyterServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        yield client


def raw_get(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    """GET ``path`` exactly as written (httpx would resolve ``..`` before sending); status and JSON body."""
    connection = HTTPConnection(urlsplit(url).netloc, timeout=60)
    try:
        connection.request("GET", path, headers=headers)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_health_says_who_the_server_is_to_the_service(workbench, http):
    reply = http.get(workbench.server.url + "cloudmri/health", headers=workbench.server.headers())
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"service_url": workbench.service.url, "reachable": True, "user": "alice",
                            "site": "siteA", "scopes": sorted(ROLE_SCOPES["researcher"])}


@pytest.mark.parametrize(("method", "path"), [("GET", "cloudmri/health"), ("GET", "cloudmri/api/datasets"),
                                              ("POST", "cloudmri/api/uploads"), ("DELETE", "cloudmri/api/grants/x")])
@pytest.mark.parametrize("token", [None, "wrong"])
def test_requests_without_the_servers_token_are_refused(workbench, method, path, token):
    headers = {} if token is None else {"Authorization": f"token {token}"}
    with httpx.Client(timeout=60.0, trust_env=False) as stranger:  # no login cookie from other tests
        reply = stranger.request(method, workbench.server.url + path, headers=headers, follow_redirects=False)
    assert reply.status_code == 403, reply.text


def test_a_browser_session_must_show_its_xsrf_token_to_change_anything(workbench):
    with httpx.Client(timeout=60.0, trust_env=False) as browser:
        login = browser.get(workbench.server.url + "cloudmri/health", headers=workbench.server.headers())
        assert login.status_code == 200 and browser.cookies  # the token logged the session in
        assert browser.get(workbench.server.url + "cloudmri/api/datasets").status_code == 200
        forged = browser.post(workbench.server.url + "cloudmri/api/uploads", json={"filename": "x.h5"})
    assert forged.status_code == 403 and "'_xsrf' argument missing" in forged.json()["message"]


def test_proxy_returns_the_services_answers(workbench, http, phantom_mrd):
    with Client(workbench.service.url, workbench.token) as direct:
        dataset = direct.upload(phantom_mrd)
    proxy = workbench.server.url + "cloudmri/api/"
    listed = http.get(proxy + "datasets", headers=workbench.server.headers())
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
    assert [d["id"] for d in listed.json()] == [dataset["id"]]
    assert http.get(proxy + "datasets", params={"site": "siteB"}, headers=workbench.server.headers()).json() == []
    missing = http.get(proxy + "datasets/no-such-dataset", headers=workbench.server.headers())
    assert missing.status_code == 404 and "detail" in missing.json()


def test_proxy_streams_an_upload_and_a_download(workbench, http, tmp_path):
    scan = write_phantom(tmp_path / "scan.h5", PhantomSpec(matrix=128, coils=8, accel=2, calib=16, seed=7))
    data = scan.read_bytes()
    assert len(data) > 1 << 20  # more than one upload chunk and more than one read on each side
    proxy, headers = workbench.server.url + "cloudmri/api/", workbench.server.headers()
    upload = http.post(proxy + "uploads", headers=headers, json={
        "filename": scan.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert upload.status_code == 201, upload.text
    upload = upload.json()
    offset = 0
    while offset < len(data):
        part = data[offset:offset + upload["chunk_size"]]
        pieces = (part[i:i + 65536] for i in range(0, len(part), 65536))  # no Content-Length: chunked encoding
        reply = http.put(f"{proxy}uploads/{upload['id']}/chunks", params={"offset": offset}, content=pieces,
                         headers={**headers, "Content-Type": "application/octet-stream"})
        assert reply.status_code == 200, reply.text
        offset = reply.json()["offset"]
    dataset = http.post(f"{proxy}uploads/{upload['id']}/complete", headers=headers)
    assert dataset.status_code == 201, dataset.text
    raw = http.get(f"{proxy}datasets/{dataset.json()['id']}/raw", headers=headers)
    assert raw.status_code == 200 and raw.content == data
    assert raw.headers["x-content-sha256"] == hashlib.sha256(data).hexdigest()
    assert int(raw.headers["content-length"]) == len(data)


@pytest.mark.parametrize("path", ["cloudmri/api/../health", "cloudmri/api/%2E%2E/%2E%2E/api/status",
                                  "cloudmri/api/datasets/..%2F..%2Fhealth", "cloudmri/api/./datasets"])
def test_paths_that_could_leave_the_api_are_refused(workbench, path):
    status, body = raw_get(workbench.server.url, BASE_URL + path, workbench.server.headers())
    assert status == 400
    assert "'..' segment" in body["message"]


def test_a_service_that_is_down_gives_a_clear_answer(service, http, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    with JupyterServerProcess(service.env, tmp_path, config_path=[SERVER_CONFIG],
                              args=[f"--CloudMRIExtension.service_url={down}"]) as server:
        health = http.get(server.url + "cloudmri/health", headers=server.headers())
        proxied = http.get(server.url + "cloudmri/api/datasets", headers=server.headers())
    assert health.status_code == 502 and health.headers["content-type"] == "application/json"
    report = health.json()
    assert (report["service_url"], report["reachable"], report["user"]) == (down, False, None)
    assert report["error"].startswith(f"cannot reach the Cloud-MRI service at {down}")
    assert proxied.status_code == 502
    assert proxied.json()["message"].startswith(f"cannot reach the Cloud-MRI service for GET {down}/api/v1/datasets")


def test_a_refusal_before_the_body_is_read_comes_back_unchanged(workbench, http):
    proxy, headers = workbench.server.url + "cloudmri/api/", workbench.server.headers()
    size = 3 << 20  # three times the service's chunk limit (1 MiB here): it answers 413 without reading on
    upload = http.post(proxy + "uploads", headers=headers, json={"filename": "big.h5", "size": size,
                                                                 "sha256": "0" * 64}).json()
    reply = http.put(f"{proxy}uploads/{upload['id']}/chunks", params={"offset": 0}, content=bytes(size),
                     headers={**headers, "Content-Type": "application/octet-stream"})
    assert reply.status_code == 413 and reply.json()["detail"].startswith("the request body has 3145728 bytes")
