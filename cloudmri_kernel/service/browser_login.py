"""Browser sign-in through JupyterHub's OAuth provider (the flow of JupyterHub's ``HubOAuth``).

Kernels send their token in a header; a browser (an ``<img>`` tile in a Voilà app, a link to an image) has
only cookies. ``GET /oauth_login`` sends it to the hub's ``/hub/api/oauth2/authorize``; the hub redirects back
to ``/oauth_callback`` with a code, which the service exchanges (with its client secret, the service's API
token) for an access token of that user, kept in an HttpOnly cookie. The cookie is honoured only for GET and
HEAD requests, so a page on another site cannot make a signed-in browser change anything (no CSRF).
JupyterHub gives a managed service everything it needs in the environment: ``JUPYTERHUB_CLIENT_ID``,
``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_OAUTH_CALLBACK_URL``, ``JUPYTERHUB_HOST``,
``JUPYTERHUB_BASE_URL``.

References:
    Hardt D. The OAuth 2.0 Authorization Framework. RFC 6749, 2012 (authorization code grant, section 4.1).
    JupyterHub documentation, "JupyterHub and OAuth" and ``jupyterhub.services.auth.HubOAuth``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Cookie, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.service import service_prefix

SESSION_COOKIE = "cloudmri-session"
STATE_COOKIE = "cloudmri-oauth-state"
router = APIRouter(tags=["browser sign-in"])


@dataclass(frozen=True)
class HubOAuthClient:
    client_id: str
    client_secret: str
    api_url: str
    callback_url: str
    authorize_url: str

    @classmethod
    def from_environment(cls) -> HubOAuthClient | None:
        """The client JupyterHub configured for this service, or None outside a hub."""
        env = os.environ
        if not all(env.get(k) for k in ("JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL",
                                          "JUPYTERHUB_OAUTH_CALLBACK_URL")):
            return None
        hub = env.get("JUPYTERHUB_HOST", "") + env.get("JUPYTERHUB_BASE_URL", "/")
        return cls(env["JUPYTERHUB_CLIENT_ID"], env["JUPYTERHUB_API_TOKEN"], env["JUPYTERHUB_API_URL"].rstrip("/"),
                   env["JUPYTERHUB_OAUTH_CALLBACK_URL"], hub.rstrip("/") + "/hub/api/oauth2/authorize")

    def exchange(self, code: str) -> str:
        """The user's access token for an authorization code."""
        try:
            reply = httpx.post(f"{self.api_url}/oauth2/token", timeout=10, data={
                "client_id": self.client_id, "client_secret": self.client_secret,
                "grant_type": "authorization_code", "code": code, "redirect_uri": self.callback_url})
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach JupyterHub to finish the sign-in ({exc})") from None
        if reply.status_code != 200:
            raise UsageError(f"JupyterHub refused the sign-in code ({reply.status_code})")
        return reply.json()["access_token"]


def _safe_next(next_url: str | None) -> str:
    """Only paths on this host: an open redirect would let other sites borrow the sign-in."""
    if next_url and next_url.startswith("/") and not next_url.startswith("//") and "\\" not in next_url:
        return next_url
    return "/"


def _client(request: Request) -> HubOAuthClient:
    client = request.app.state.oauth
    if client is None:
        raise UsageError("browser sign-in needs JupyterHub (the service is not running as a hub service)")
    return client


@router.get("/oauth_login", response_class=RedirectResponse, status_code=302)
def oauth_login(request: Request, next_url: Annotated[str | None, Query(alias="next", max_length=2048)] = None):
    """Start the sign-in: off to JupyterHub, then back to ``/oauth_callback``."""
    client = _client(request)
    state = secrets.token_urlsafe(24)
    target = client.authorize_url + "?" + urlencode({"client_id": client.client_id, "response_type": "code",
                                                      "redirect_uri": client.callback_url, "state": state})
    response = RedirectResponse(target, status_code=302)
    secure = request.url.scheme == "https"
    response.set_cookie(STATE_COOKIE, f"{state}:{_safe_next(next_url)}", max_age=600, httponly=True,
                        samesite="lax", secure=secure, path=service_prefix())
    return response


@router.get("/oauth_callback", response_class=RedirectResponse, status_code=302)
def oauth_callback(request: Request, code: Annotated[str, Query(max_length=4096)],
                   state: Annotated[str, Query(max_length=256)],
                   expected: Annotated[str | None, Cookie(alias=STATE_COOKIE)] = None):
    """Finish the sign-in: check the state, exchange the code, keep the user's token in an HttpOnly cookie."""
    client = _client(request)
    remembered, _, next_url = (expected or "").partition(":")
    if not remembered or not secrets.compare_digest(remembered, state):
        return JSONResponse({"detail": "the sign-in state does not match: start again at /oauth_login"},
                            status_code=400)
    token = client.exchange(code)
    response = RedirectResponse(_safe_next(next_url), status_code=302)
    secure = request.url.scheme == "https"
    # only this service sees the cookie: not the hub, not users' servers under the same host
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure, path=service_prefix())
    response.delete_cookie(STATE_COOKIE, path=service_prefix())
    return response
