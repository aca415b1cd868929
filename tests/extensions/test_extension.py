"""The server extension's pieces without a server: paths, headers, settings and their problems."""

from __future__ import annotations

import asyncio
import json

import cloudmri_jupyter
import httpx
import pytest
from cloudmri_jupyter.app import CloudMRIExtension
from cloudmri_jupyter.handlers import request_headers, service_path

from tests.extensions.conftest import SERVER_CONFIG

TOKEN_VARIABLES = ("CLOUDMRI_SERVICE_URL", "CLOUDMRI_SERVICE_TOKEN", "CLOUDMRI_SERVICE_TOKEN_FILE",
                   "JUPYTERHUB_API_TOKEN")


@pytest.fixture
def no_service_settings(monkeypatch):
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_package_points_jupyter_server_at_the_extension_and_the_config_enables_it():
    assert cloudmri_jupyter._jupyter_server_extension_points() == [
        {"module": "cloudmri_jupyter", "app": CloudMRIExtension}]
    config = json.loads((SERVER_CONFIG / "jupyter_server_config.d" / "cloudmri_jupyter.json").read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"cloudmri_jupyter": True}}}


@pytest.mark.parametrize(("path", "expected"), [
    ("datasets", "/datasets"),
    ("datasets/3f2a/series", "/datasets/3f2a/series"),
    ("series/a b/images/0.png", "/series/a%20b/images/0.png"),
    ("datasets/..x", "/datasets/..x"),
])
def test_service_paths_stay_below_the_api(path, expected):
    assert service_path(path) == expected


@pytest.mark.parametrize("path", ["..", "../health", "datasets/../../health", "./datasets", "datasets/."])
def test_dot_segments_are_refused(path):
    with pytest.raises(ValueError, match=r"has a '\.' or '\.\.' segment"):
        service_path(path)


def test_only_harmless_headers_cross_and_the_owners_token_replaces_the_callers():
    incoming = {"Authorization": "token jupyter-token", "Cookie": "_xsrf=1; jupyter-session=secret",
                "X-XSRFToken": "1", "Accept": "application/json", "Content-Type": "application/octet-stream",
                "Content-Length": "12", "Host": "127.0.0.1:8888"}
    assert request_headers(incoming, "owner-token", has_body=True) == {
        "Authorization": "token owner-token", "Accept": "application/json", "Accept-Encoding": "identity",
        "Content-Type": "application/octet-stream", "Content-Length": "12"}
    assert "Content-Length" not in request_headers(incoming, "owner-token", has_body=False)


def test_settings_default_to_the_clients(no_service_settings, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_SERVICE_URL", "http://127.0.0.1:8000/services/cloudmri")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    extension = CloudMRIExtension()
    assert (extension.service_url, extension.token) == ("http://127.0.0.1:8000/services/cloudmri", "hub-token")
    assert extension.api_url == "http://127.0.0.1:8000/services/cloudmri/api/v1"
    assert extension.configuration_problem() is None
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN", "cloudmri-token")  # the client's order: this one comes first
    assert CloudMRIExtension().token == "cloudmri-token"


def test_configured_values_win(no_service_settings):
    extension = CloudMRIExtension(service_url="http://cloudmri:8765/", token="configured")
    assert (extension.api_url, extension.authorization()) == (
        "http://cloudmri:8765/api/v1", {"Authorization": "token configured"})


def test_health_without_a_token_says_what_to_set(no_service_settings):
    status, report = asyncio.run(CloudMRIExtension().check_service())
    assert status == 503
    assert (report["reachable"], report["user"], report["scopes"]) == (False, None, [])
    assert report["error"].startswith("no token for the Cloud-MRI service: run the server inside JupyterHub")


def test_a_token_file_that_others_can_read_is_reported_not_used(no_service_settings, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("secret\n")
    token_file.chmod(0o644)
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN_FILE", str(token_file))
    extension = CloudMRIExtension()
    assert extension.token == ""
    assert extension.configuration_problem() == f"{token_file}: the token file is readable by others: chmod 600 it"


def health_with(answer) -> tuple[int, dict]:
    """The health check of an extension whose service answers (or fails) as ``answer(request)`` does."""
    async def check() -> tuple[int, dict]:
        extension = CloudMRIExtension(service_url="http://cloudmri.test", token="owner-token")
        extension.http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        async with extension.http:
            return await extension.check_service()

    return asyncio.run(check())


def test_health_reports_the_services_view_of_the_token():
    def whoami(request: httpx.Request) -> httpx.Response:
        assert (request.url, request.headers["Authorization"]) == ("http://cloudmri.test/api/v1/whoami",
                                                                   "token owner-token")
        return httpx.Response(200, json={"user": "alice", "site": "siteA", "scopes": ["upload"]})

    assert health_with(whoami) == (200, {"service_url": "http://cloudmri.test", "reachable": True, "user": "alice",
                                         "site": "siteA", "scopes": ["upload"]})


@pytest.mark.parametrize(("answer", "status", "reachable", "error"), [
    (httpx.Response(401, json={"detail": "invalid or expired token"}), 502, True,
     "the Cloud-MRI service refuses this server's token (401: invalid or expired token)"),
    (httpx.Response(503, text="<html>Service Unavailable</html>"), 502, False,
     "GET http://cloudmri.test/api/v1/whoami answered 503: <html>Service Unavailable</html>"),
    (httpx.Response(200, text="<html>JupyterHub</html>"), 502, False,
     "GET http://cloudmri.test/api/v1/whoami did not answer as the Cloud-MRI service does"),
    (httpx.ReadTimeout("timed out"), 504, False, "the Cloud-MRI service at http://cloudmri.test did not answer"),
    (httpx.ConnectError("connection refused"), 502, False,
     "cannot reach the Cloud-MRI service at http://cloudmri.test (connection refused)"),
])
def test_health_says_what_went_wrong(answer, status, reachable, error):
    def reply(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    got_status, report = health_with(reply)
    assert (got_status, report["reachable"], report["user"]) == (status, reachable, None)
    assert report["error"].startswith(error)
