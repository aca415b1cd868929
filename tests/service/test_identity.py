"""Token authorities: local tokens (hashed, expiring, 0600) and JupyterHub's /user answer mapped to scopes.

The hub here is a stand-in HTTP server that answers like JupyterHub 5's ``GET /hub/api/user``; the real hub
runs the service in the hub tests."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service.identity import (
    ROLE_SCOPES,
    SCOPES,
    AuthenticationError,
    HubTokens,
    LocalTokens,
    short_scopes,
    token_from_header,
)


def test_role_map_names_only_known_scopes():
    assert all(set(scopes) <= set(SCOPES) for scopes in ROLE_SCOPES.values())
    assert "read-raw" not in ROLE_SCOPES["radiologist"] and "upload" not in ROLE_SCOPES["instructor"]
    assert set(ROLE_SCOPES["admin"]) == set(SCOPES)


def test_header_forms():
    assert token_from_header("token abc") == "abc" and token_from_header("Bearer abc") == "abc"
    for bad in (None, "", "abc", "Basic abc", "token "):
        with pytest.raises(AuthenticationError):
            token_from_header(bad)


def test_local_tokens_are_hashed_expire_and_refuse_loose_files(tmp_path):
    tokens = LocalTokens(tmp_path / "tokens.json")
    token = tokens.create("alice", "siteA", ["upload", "read-raw"])
    assert token not in (tmp_path / "tokens.json").read_text()
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    who = tokens.identify(token)
    assert (who.user, who.site, who.scopes) == ("alice", "siteA", frozenset({"upload", "read-raw"}))
    old = tokens.create("alice", "siteA", ["upload"], expires_in=timedelta(seconds=-1))
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.identify(old)
    with pytest.raises(AuthenticationError, match="not valid"):
        tokens.identify(token + "x")
    with pytest.raises(UsageError, match="unknown scope"):
        tokens.create("alice", "siteA", ["root"])
    (tmp_path / "tokens.json").chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        tokens.identify(token)


class _Hub(BaseHTTPRequestHandler):
    users = {"good": {"name": "rita", "groups": ["radiologists", "site-charite"],
                      "scopes": ["read:users:name!user=rita", "custom:cloudmri:read-images",
                                 "custom:cloudmri:report", "custom:cloudmri:unknown"]}}
    calls = 0

    def do_GET(self):  # noqa: N802 - the http.server interface
        type(self).calls += 1
        token = self.headers.get("Authorization", "").removeprefix("token ")
        model = self.users.get(token)
        self.send_response(200 if model and self.path == "/hub/api/user" else 403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(model or {"message": "Forbidden"}).encode())

    def do_POST(self):  # noqa: N802 - the OAuth token endpoint
        length = int(self.headers.get("Content-Length", 0))
        form = dict(pair.split("=", 1) for pair in self.rfile.read(length).decode().split("&"))
        good = (self.path == "/hub/api/oauth2/token" and form.get("code") == "c0de"
                and form.get("client_secret") == "service-secret" and form.get("grant_type") == "authorization_code")
        self.send_response(200 if good else 400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"access_token": "good", "token_type": "Bearer"} if good else {}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hub/api"
    server.shutdown()
    server.server_close()


def test_hub_tokens_map_groups_and_custom_scopes(hub_url):
    hub = HubTokens(hub_url)
    who = hub.identify("good")
    assert (who.user, who.site) == ("rita", "charite")
    assert who.scopes == frozenset({"read-images", "report"})
    calls = _Hub.calls
    hub.identify("good")
    assert _Hub.calls == calls  # cached
    with pytest.raises(AuthenticationError, match="does not accept"):
        hub.identify("bad")


def test_unreachable_hub_is_401_not_a_crash():
    with pytest.raises(AuthenticationError, match="cannot reach JupyterHub"):
        HubTokens("http://127.0.0.1:9/hub/api").identify("x")


def test_short_scopes_ignores_others():
    assert short_scopes(["custom:cloudmri:admin", "admin:users", "custom:other:x"]) == frozenset({"admin"})


def test_browser_sign_in_through_the_hub(hub_url, monkeypatch, tmp_path):
    from urllib.parse import parse_qs, urlparse

    from fastapi.testclient import TestClient

    from cloudmri_kernel.service.app import create_app

    hub_root = hub_url.removesuffix("/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_URL", hub_url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "service-secret")
    monkeypatch.setenv("JUPYTERHUB_CLIENT_ID", "service-cloudmri")
    monkeypatch.setenv("JUPYTERHUB_HOST", hub_root)
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/")
    monkeypatch.setenv("JUPYTERHUB_OAUTH_CALLBACK_URL", "http://testserver/oauth_callback")
    with TestClient(create_app(), follow_redirects=False) as browser:
        start = browser.get("/oauth_login", params={"next": "/api/v1/whoami"})
        assert start.status_code == 302
        target = urlparse(start.headers["location"])
        query = parse_qs(target.query)
        assert f"{target.scheme}://{target.netloc}{target.path}" == hub_root + "/hub/api/oauth2/authorize"
        assert query["client_id"] == ["service-cloudmri"] and query["response_type"] == ["code"]
        assert browser.get("/oauth_callback", params={"code": "c0de", "state": "forged"}).status_code == 400
        back = browser.get("/oauth_callback", params={"code": "c0de", "state": query["state"][0]})
        assert back.status_code == 302 and back.headers["location"] == "/api/v1/whoami"
        assert "httponly" in back.headers["set-cookie"].lower()
        assert browser.get("/api/v1/whoami").json()["user"] == "rita"
        # the cookie alone never authorizes a change
        upload = browser.post("/api/v1/uploads", json={"filename": "x", "size": 1, "sha256": "a" * 64})
        assert upload.status_code == 401
        evil = browser.get("/oauth_login", params={"next": "//evil.example/steal"})
        state = parse_qs(urlparse(evil.headers["location"]).query)["state"][0]
        assert browser.get("/oauth_callback", params={"code": "c0de", "state": state}).headers["location"] == "/"
