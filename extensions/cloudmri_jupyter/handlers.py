"""Request handlers: the health check and the proxy to the Cloud-MRI API service.

Both need an authenticated user of this Jupyter server (in JupyterHub: its owner, or whom the owner shares it
with), because the proxy acts with the owner's token. Requests that change something (POST, PUT, PATCH, DELETE)
also pass jupyter_server's XSRF check when they come from a browser session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import httpx
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

AUTH_RESOURCE = "cloudmri"
BODY_METHODS = {"POST", "PUT", "PATCH"}
QUEUED_BODY_CHUNKS = 4  # request bytes held between the browser and the service: backpressure on fast uploads
# Only these headers cross the proxy: the caller's cookies and Jupyter token stay in this server, and the
# service sees the owner's token instead.
REQUEST_HEADERS = ("Accept", "If-Modified-Since", "If-None-Match", "Range")
REQUEST_BODY_HEADERS = ("Content-Length", "Content-Type")
RESPONSE_HEADERS = ("Accept-Ranges", "Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Length",
                    "Content-Range", "ETag", "Last-Modified", "Retry-After", "X-Content-SHA256")
NO_BODY_STATUS = {204, 304}


def service_path(path: str) -> str:
    """The service path (below ``/api/v1``) that ``{base_url}cloudmri/api/<path>`` stands for.

    Args:
        path: the decoded path after ``cloudmri/api/``, e.g. ``datasets/3f2a``.

    Returns:
        The path quoted for a URL, e.g. ``/datasets/3f2a``.

    Raises:
        ValueError: the path has a ``.`` or ``..`` segment (it could leave ``/api/v1``).
    """
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError(f"the path 'cloudmri/api/{path}' has a '.' or '..' segment: the proxy reaches only the "
                         "service's /api/v1/ routes; ask for the resource by its own path")
    return "/" + quote(path)


def request_headers(incoming: Mapping[str, str], token: str, has_body: bool) -> dict[str, str]:
    """The headers of the request to the service: a few of the caller's, and the owner's token.

    Args:
        incoming: the caller's request headers.
        token: the token the service knows the server owner by.
        has_body: whether the request carries a body (then its length and type go along).
    """
    names = REQUEST_HEADERS + (REQUEST_BODY_HEADERS if has_body else ())
    headers = {name: incoming[name] for name in names if name in incoming}
    headers["Authorization"] = f"token {token}"
    headers["Accept-Encoding"] = "identity"  # bytes pass through unchanged, so Content-Length stays true
    return headers


class HealthHandler(ExtensionHandlerMixin, APIHandler):
    """``GET {base_url}cloudmri/health``: can this server reach the service, and who is it there."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status, report = await self.extensionapp.check_service()
        self.set_status(status)
        self.finish(json.dumps(report))


@web.stream_request_body
class ServiceProxyHandler(ExtensionHandlerMixin, APIHandler):
    """``{base_url}cloudmri/api/<path>`` relays GET, POST, PUT, PATCH and DELETE to ``{service}/api/v1/<path>``.

    The request body streams to the service while it arrives, and the answer streams back with the service's
    status, content type and the headers in :data:`RESPONSE_HEADERS`. When the service cannot be reached the
    reply is 502 (504 on a timeout) with a JSON ``message``.
    """

    auth_resource = AUTH_RESOURCE
    _reply: asyncio.Future | None = None  # the service's answer; set once the request to it has started
    _url = ""

    async def prepare(self) -> None:
        await super().prepare()  # identifies the user, checks XSRF for browser sessions
        await self._start_relay()

    @web.authenticated
    @authorized
    async def _start_relay(self) -> None:
        app = self.extensionapp
        problem = app.configuration_problem()
        if problem is not None:
            return self._refuse(503, problem)
        try:
            path = service_path(self.path_args[0])
        except ValueError as exc:
            return self._refuse(400, str(exc))
        self._url = app.api_url + path
        has_body = self.request.method in BODY_METHODS
        self._body: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED_BODY_CHUNKS)
        try:
            request = app.http.build_request(
                self.request.method, self._url + (f"?{self.request.query}" if self.request.query else ""),
                headers=request_headers(self.request.headers, app.token, has_body),
                content=self._body_chunks() if has_body else None)
        except httpx.InvalidURL as exc:
            return self._refuse(502, f"the service URL {app.service_url!r} is not a URL ({exc}): check "
                                     "CLOUDMRI_SERVICE_URL or c.CloudMRIExtension.service_url")
        self._reply = asyncio.ensure_future(app.http.send(request, stream=True))

    async def _body_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._body.get()) is not None:
            yield chunk

    async def _feed(self, item: bytes | None) -> None:
        """Queue request bytes (None: the end of the body) for the service, unless it has answered already."""
        put = asyncio.ensure_future(self._body.put(item))
        await asyncio.wait({put, self._reply}, return_when=asyncio.FIRST_COMPLETED)
        put.cancel()  # a no-op once queued; otherwise the service has answered and needs no more bytes

    async def data_received(self, chunk: bytes) -> None:
        if self._reply is not None:  # else prepare() refused the request and the body is dropped
            await self._feed(chunk)

    async def get(self, path: str) -> None:
        if self.request.method in BODY_METHODS:
            await self._feed(None)
        try:
            reply = await self._reply
        except httpx.TimeoutException:
            return self._refuse(504, f"the Cloud-MRI service did not answer {self.request.method} {self._url} "
                                     f"within {self.extensionapp.timeout:.0f} s (CloudMRIExtension.timeout)")
        except httpx.HTTPError as exc:
            return self._refuse(502, f"cannot reach the Cloud-MRI service for {self.request.method} {self._url} "
                                     f"({exc}): is it running? GET cloudmri/health tells more")
        content_type = reply.headers.get("Content-Type", "application/octet-stream")
        try:
            self.set_status(reply.status_code, reply.reason_phrase or None)
            self.set_header("Content-Type", content_type)  # goes out with the first bytes, before finish()
            for name in RESPONSE_HEADERS:
                if name in reply.headers and not (name == "Content-Length" and reply.status_code in NO_BODY_STATUS):
                    self.set_header(name, reply.headers[name])
            async for block in reply.aiter_raw():
                self.write(block)
                await self.flush()
        except StreamClosedError:  # the caller went away; the service's answer is dropped
            return
        except httpx.HTTPError as exc:  # headers are out: all that is left is to cut the reply short
            self.log.warning("cloudmri proxy: the service's answer to %s %s broke off (%s)", self.request.method,
                             self._url, exc)
            self.request.connection.close()
            return
        finally:
            await reply.aclose()
        self.finish(set_content_type=content_type)

    post = put = patch = delete = get

    def on_connection_close(self) -> None:
        """The caller hung up: stop the request to the service, or release its answer."""
        super().on_connection_close()
        if self._reply is None:
            return
        if not self._reply.done():
            self._reply.cancel()
        elif not self._reply.cancelled() and self._reply.exception() is None:
            asyncio.ensure_future(self._reply.result().aclose())

    def _refuse(self, status: int, message: str) -> None:
        """Answer with an error in jupyter_server's JSON form (``message``), without a traceback."""
        self.log.warning("cloudmri proxy: %d %s", status, message)
        self.set_status(status)
        self.finish(json.dumps({"message": message}))
