"""The hub's REST API and the students' servers behind it, as an instructor's token reaches them.

An instructor (the hub's ``instructors`` role, not an admin) works on the class's servers the way JupyterLab
does: the hub's REST API says whether a student's server runs (``GET /hub/api/users/NAME``) or starts it
(``POST /hub/api/users/NAME/server``), and the server's own Jupyter APIs (contents, kernels) answer under
``/user/NAME/``, both with the instructor's hub token. The role's scopes limit this to the class:
``read:users!group=students``, ``servers!group=students`` (start and stop) and ``access:servers!group=students``
(talk to the servers). ``teach collect`` and ``teach run --hub`` share this module.

References:
    JupyterHub documentation, "JupyterHub REST API" and "JupyterHub RBAC" (scopes, filters), JupyterHub 5.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin

import httpx

from cloudmri_kernel.errors import UsageError

#: The scopes that working on the class's servers needs, as the instructors' role grants them (hub_config/roles.py).
READ_SCOPE = "read:users!group=students"
ACCESS_SCOPE = "access:servers!group=students"
START_SCOPE = "servers!group=students"

#: Why a student's server cannot be used.
NOT_RUNNING, REFUSED, UNKNOWN, UNREACHABLE = "not running", "refused", "unknown student", "unreachable"


@dataclass(frozen=True)
class ServerProblem:
    """Why a student's server cannot be used: one of the statuses above and what to do, for the summary."""

    status: str
    detail: str


def reason(reply: httpx.Response) -> str:
    """The message of a hub or Jupyter error reply (both send ``{"message": ...}``), else the start of its body."""
    try:
        message = reply.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{reply.status_code} {message or reply.reason_phrase or reply.text[:200]}".strip()


def _reaches_others(scope_filter: str, owner: str) -> bool:
    """Whether a scope with this filter (``group=students``, ``user=ana``, empty: none) covers others' servers."""
    return scope_filter != f"user={owner}" and not scope_filter.startswith(f"server={owner}/")


def _server_url(hub_url: str, server: dict) -> str:
    """A server model's URL, absolute (a path under the hub's host, or a full URL with subdomains), ending in /."""
    return urljoin(hub_url, server["url"]).rstrip("/") + "/"


class Hub:
    """The hub's REST API and the students' servers behind it, with one token (an ``httpx`` client).

    Args:
        url: the hub's public URL, e.g. ``http://127.0.0.1:8000``.
        token: an instructor's hub API token.
        timeout: seconds one HTTP request may take.
    """

    def __init__(self, url: str, token: str, timeout: float):
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.http = httpx.Client(headers={"Authorization": f"token {token}"}, timeout=timeout)

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.http.request(method, f"{self.url}hub/api/{path}", **kwargs)

    def check_token(self, start_servers: bool, task: str, outcome: str) -> None:
        """Refuse, before any student is touched, a token the hub does not accept or that lacks a scope needed.

        Args:
            start_servers: starting servers is asked for, so :data:`START_SCOPE` is needed too.
            task: what needs the scopes, for the message (``"collecting"``).
            outcome: what the refusal means, for the message (``"nothing was read"``).

        Raises:
            UsageError: no hub at the URL, a token it refuses, or a missing scope (named).
        """
        try:
            reply = self.api("GET", "user")
        except httpx.TransportError as exc:
            raise UsageError(f"cannot reach JupyterHub at {self.url} ({exc}): check --hub-url") from None
        if reply.status_code == 404:
            raise UsageError(f"no JupyterHub API at {self.url}hub/api/ (404): check --hub-url")
        if reply.status_code != 200:
            raise UsageError(f"JupyterHub at {self.url} refused the token ({reason(reply)}): give an instructor's "
                             "token (hub → Token page) with --token-file or JUPYTERHUB_API_TOKEN")
        try:
            model = reply.json()
        except json.JSONDecodeError:
            raise UsageError(f"{self.url} answered /hub/api/user with something that is not JSON: is it "
                             "JupyterHub? check --hub-url") from None
        owner = model.get("name", "?")
        # Everyone's token has "self", which expands to these scopes filtered to the owner's own servers; only
        # scopes that reach other users' servers (unfiltered, by group, by another user) count here.
        scopes = {scope.partition("!")[0] for scope in model.get("scopes", [])
                  if _reaches_others(scope.partition("!")[2], owner)}
        needed = [(ACCESS_SCOPE, "access:servers")]
        if start_servers:
            needed.append((START_SCOPE, "servers"))
        missing = [scope for scope, base in needed if base not in scopes]
        if missing:
            raise UsageError(f"the token of {owner} lacks the scope {' and '.join(missing)}, which "
                             f"{task} needs (the instructors' role has it): {outcome}")

    def server(self, student: str, start: bool, start_timeout: float,
               cancel: threading.Event | None = None) -> str | ServerProblem:
        """The URL (ending in /) of the student's running default server, started first if ``start``, or why
        there is none; ``cancel``, when set, stops the wait for a starting server."""
        name = quote(student, safe="")
        reply = self.api("GET", f"users/{name}")
        if reply.status_code == 404:
            return ServerProblem(UNKNOWN, f"the hub has no user {student} that this token may see "
                                 f"({reason(reply)}): check the roster, and that {student} is in the students "
                                 "group")
        if reply.status_code == 403:
            return ServerProblem(REFUSED, f"the hub refused to show {student} ({reason(reply)}): the token needs "
                                 f"{READ_SCOPE}")
        if reply.status_code != 200:
            return ServerProblem(UNREACHABLE, f"the hub answered {reason(reply)} for {student}")
        model = reply.json()
        if "servers" not in model:  # list:users shows every name; only read:users!group=… shows servers
            return ServerProblem(REFUSED, f"the hub shows {student}'s name but not their servers to this token "
                                 f"({READ_SCOPE} covers the class): is {student} in the students group?")
        server = model["servers"].get("")
        if server and server.get("ready"):
            return _server_url(self.url, server)
        if not start:
            state = "is starting" if server else "is not running"
            return ServerProblem(NOT_RUNNING, f"{student}'s server {state}: start it (--start-servers) or ask "
                                 "the student to")
        if not server:
            started = self.api("POST", f"users/{name}/server", json={})
            if started.status_code not in (201, 202):
                status = REFUSED if started.status_code == 403 else NOT_RUNNING
                return ServerProblem(status, f"the hub did not start {student}'s server ({reason(started)}); "
                                     f"starting needs {START_SCOPE}")
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                return ServerProblem(NOT_RUNNING, f"cancelled while {student}'s server started")
            server = self.api("GET", f"users/{name}").json().get("servers", {}).get("")
            if not server:
                return ServerProblem(NOT_RUNNING, f"{student}'s server stopped while starting: see the hub's log")
            if server.get("ready"):
                return _server_url(self.url, server)
            time.sleep(0.5)
        return ServerProblem(NOT_RUNNING, f"{student}'s server was not ready within {start_timeout:.0f} s")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *_exc_info) -> None:
        self.close()
