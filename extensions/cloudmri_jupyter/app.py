"""The server extension: its settings and its one connection to the Cloud-MRI API service."""

from __future__ import annotations

from typing import Any

import httpx
from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Unicode, default

from cloudmri_jupyter.handlers import HealthHandler, ServiceProxyHandler
from cloudmri_kernel.client import API, default_token
from cloudmri_kernel.config import settings
from cloudmri_kernel.errors import CloudMRIError


def service_detail(reply: httpx.Response) -> Any:
    """What the service said about a refusal: the ``detail`` of its JSON body, else the start of its text."""
    try:
        return reply.json().get("detail")
    except (ValueError, AttributeError):
        return reply.text[:300]


class CloudMRIExtension(ExtensionApp):
    """Routes ``{base_url}cloudmri/health`` and ``{base_url}cloudmri/api/…`` to the Cloud-MRI API service.

    Settings go in ``jupyter_server_config.py`` as ``c.CloudMRIExtension.<name>`` or on the command line as
    ``--CloudMRIExtension.<name>=…``; inside JupyterHub the defaults need none.
    """

    name = "cloudmri_jupyter"
    description = "Cloud-MRI Workbench: the Cloud-MRI API service, reached with this server owner's token"

    service_url = Unicode(
        config=True,
        help="""Base URL of the Cloud-MRI API service, without /api/v1.

        Default: CLOUDMRI_SERVICE_URL (which the hub sets for every user server), else the client's default.
        Example: c.CloudMRIExtension.service_url = "http://127.0.0.1:8000/services/cloudmri"
        """,
    )
    token = Unicode(
        config=True,
        help="""Token sent to the service as 'Authorization: token …' on health checks and proxied requests.

        Default: the client's token: CLOUDMRI_SERVICE_TOKEN, the file named by CLOUDMRI_SERVICE_TOKEN_FILE, then
        JUPYTERHUB_API_TOKEN (the server owner's own hub token). Prefer those to writing a token into a config
        file. Example: c.CloudMRIExtension.token = open("/run/secrets/cloudmri-token").read().strip()
        """,
    )
    timeout = Float(
        60.0,
        config=True,
        help="""Seconds to wait for the service to accept a connection, answer, or send the next bytes.

        Example: c.CloudMRIExtension.timeout = 300.0
        """,
    )

    settings_problem: str | None = None  # why a default could not be read (a health reply tells the user)
    http: httpx.AsyncClient | None = None  # made when the server loads the extension

    @default("service_url")
    def _default_service_url(self) -> str:
        try:
            return settings().service_url
        except CloudMRIError as exc:
            self.settings_problem = str(exc)
            return ""

    @default("token")
    def _default_token(self) -> str:
        try:
            return default_token() or ""
        except CloudMRIError as exc:  # e.g. a token file that others can read: the health reply says so
            self.settings_problem = str(exc)
            return ""

    def initialize_settings(self) -> None:
        self.http = httpx.AsyncClient(timeout=self.timeout)
        problem = self.configuration_problem()
        if problem is not None:  # the server starts anyway; cloudmri/health gives the same answer to the user
            self.log.warning("cloudmri_jupyter cannot reach the Cloud-MRI service: %s", problem)

    def initialize_handlers(self) -> None:
        self.handlers.extend([
            (r"/cloudmri/health", HealthHandler),
            (r"/cloudmri/api/(.*)", ServiceProxyHandler),
        ])

    async def stop_extension(self) -> None:
        if self.http is not None:
            await self.http.aclose()

    @property
    def api_url(self) -> str:
        """The service's API root, e.g. ``http://127.0.0.1:8000/services/cloudmri/api/v1``."""
        return self.service_url.rstrip("/") + API

    def configuration_problem(self) -> str | None:
        """Why this server cannot talk to the service at all, or None when it is configured."""
        if self.settings_problem is not None:
            return self.settings_problem
        if not self.service_url:
            return "no service URL: set CLOUDMRI_SERVICE_URL or c.CloudMRIExtension.service_url"
        if not self.token:
            return ("no token for the Cloud-MRI service: run the server inside JupyterHub (JUPYTERHUB_API_TOKEN), "
                    "or set CLOUDMRI_SERVICE_TOKEN_FILE or c.CloudMRIExtension.token")
        return None

    def authorization(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def check_service(self) -> tuple[int, dict]:
        """Ask the service who this server's token belongs to (``GET /api/v1/whoami``).

        Returns:
            The status of the health reply (200; 502 when the service cannot be reached or refuses; 503 when this
            server is not configured; 504 when the service does not answer in time) and its JSON body:
            ``service_url``, ``reachable``, ``user``, ``site``, ``scopes`` and, unless 200, ``error``.
        """
        report = {"service_url": self.service_url, "reachable": False, "user": None, "site": None, "scopes": []}
        problem = self.configuration_problem()
        if problem is not None:
            return 503, {**report, "error": problem}
        url = f"{self.api_url}/whoami"
        try:
            reply = await self.http.get(url, headers=self.authorization())
        except httpx.TimeoutException:
            return 504, {**report, "error": f"the Cloud-MRI service at {self.service_url} did not answer within "
                                            f"{self.timeout:.0f} s: is it overloaded? (CloudMRIExtension.timeout)"}
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return 502, {**report, "error": f"cannot reach the Cloud-MRI service at {self.service_url} ({exc}): "
                                            "is it running, and is CLOUDMRI_SERVICE_URL right?"}
        report["reachable"] = reply.status_code < 500
        if reply.status_code in (401, 403):
            return 502, {**report, "error": f"the Cloud-MRI service refuses this server's token "
                                            f"({reply.status_code}: {service_detail(reply)}): is the token "
                                            "(JUPYTERHUB_API_TOKEN or CLOUDMRI_SERVICE_TOKEN) valid for it?"}
        if reply.status_code != 200:
            return 502, {**report, "error": f"GET {url} answered {reply.status_code}: {service_detail(reply)}"}
        try:
            caller = reply.json()
            found = {"user": caller["user"], "site": caller["site"], "scopes": caller["scopes"]}
        except (ValueError, KeyError, TypeError):
            return 502, {**report, "reachable": False,
                         "error": f"GET {url} did not answer as the Cloud-MRI service does: is "
                                  f"{self.service_url} its URL?"}
        return 200, {**report, **found}
