"""Reading mode: a Jupyter server that serves Voilà dashboards and nothing that runs code of the user's choosing.

The hub starts the servers of the ``radiologists`` group in this mode. Such a server renders the notebooks of one
folder (``notebooks/apps/``) with Voilà and lets the Voilà page talk to its own kernel (ipywidgets comms), but it
offers no JupyterLab or notebook UI, starts no kernel over the REST API, opens no terminal, writes no file through
the contents API, and passes no ``execute_request`` from a browser to a kernel.

The hub spawner calls one function, :func:`reading_mode_args`, and appends what it returns to the server's command
line (``Spawner.args``)::

    from cloudmri_jupyter.reading import reading_mode_args
    spawner.args = [*spawner.args, *reading_mode_args(Path("/srv/cloudmri/notebooks/apps"))]

Reading mode itself needs no environment variable or config file. ``jupyterhub-singleuser`` (in JupyterHub 5 a
jupyter_server extension app, ``jupyterhub/singleuser/extension.py``, ``load_config_file``) merges command-line
``ServerApp`` options above its own settings, so ``root_dir`` and ``default_url`` win over
``Spawner.notebook_dir`` / ``Spawner.default_url`` (``JUPYTERHUB_ROOT_DIR`` / ``JUPYTERHUB_DEFAULT_URL``). Don't
add another ``--ServerApp.root_dir`` or ``--ServerApp.authorizer_class`` to the same command line: traitlets
refuses a second value and the server does not start. The apps' kernels inherit the server's environment, so the
reading app finds the service as every user server does (``CLOUDMRI_SERVICE_URL`` and the user's token). The apps
folder must be readable by the account the server runs as; ``ipywidgets`` must be installed for widget apps.

How it works, in three layers that each refuse on their own (the docs and sources they rest on are cited on each):

1. :class:`ReadingAuthorizer`, the server's ``ServerApp.authorizer_class``: jupyter_server's designed mechanism
   for granular permissions (https://jupyter-server.readthedocs.io/en/latest/operators/security.html#authorization,
   ``jupyter_server/auth/authorizer.py``). Every REST and websocket handler of jupyter_server asks it
   ``is_authorized(handler, user, action, resource)`` (the ``@authorized`` decorator,
   ``jupyter_server/auth/decorator.py``; the kernel websocket in ``KernelWebsocketHandler.pre_get``,
   ``jupyter_server/services/kernels/websocket.py``). It allows reading, and "execute" on kernels only for the
   kernel websocket, which the Voilà page needs; everything else is refused with 403.
2. A path allowlist placed first in tornado's router: handlers that never ask the authorizer (JupyterLab's pages
   and its ``lab/api/extensions`` and ``lab/api/build`` handlers, which install packages and run builds and use only
   ``@web.authenticated``: ``jupyterlab/handlers/extension_manager_handler.py``, ``build_handler.py``; the notebook
   UI's ``/tree``; jupyter-lsp) are unreachable, whatever extensions the image installs. Paths outside the list
   answer 404.
3. ``MappingKernelManager.allowed_message_types`` set to the message types Voilà allows: jupyter_server's own
   filter of websocket messages from the browser to a kernel (``ZMQChannelsWebsocketConnection
   .handle_incoming_message``, ``jupyter_server/services/kernels/connection/channels.py``), which drops any other
   message, ``execute_request`` included. Standalone ``voila`` sets exactly this list on its kernel manager
   (``VoilaApp.init_settings``, ``voila/app.py``), but the Voilà *server extension* does not
   (``voila/server_extension.py`` uses the server's own kernel manager unchanged): in a Jupyter server a browser
   could otherwise send ``execute_request`` on a Voilà kernel's channels, so reading mode sets the list itself.

How Voilà 0.5 runs a dashboard in a Jupyter server (``voila/server_extension.py``, ``voila/handler.py``,
``voila/notebook_renderer.py``): ``GET {base_url}voila/render/<path>`` (``TornadoVoilaHandler``, authenticated but
not authorized) starts a kernel with the server's kernel manager in Python (``kernel_manager.start_kernel``, not
``POST /api/kernels``), executes the notebook's own cells over a ZeroMQ kernel client in the server process, and
streams the HTML. The page's JavaScript then opens ``{base_url}api/kernels/<id>/channels``, jupyter_server's
``KernelWebsocketHandler`` (standalone voila routes it to its own ``VoilaKernelWebsocketHandler``; the extension
does not), for the widgets' comm messages. Neither the execution nor the websocket needs ``POST /api/kernels`` or
``/api/sessions``, so those are refused.

The extension (enabled by the ``--ServerApp.jpserver_extensions`` option that :func:`reading_mode_args` returns)
fails closed: if it cannot set up all three layers the server exits rather than start without them, and the
authorizer refuses everything in a server where the extension did not load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_server.auth.authorizer import AllowAllAuthorizer, Authorizer
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from tornado import web
from tornado.routing import Matcher, Rule

__all__ = ["EXTENSION", "VOILA_MESSAGE_TYPES", "ALLOWED_ACTIONS", "ALLOWED_PATHS", "ReadingAuthorizer",
           "reading_mode_args"]

EXTENSION = "cloudmri_jupyter.reading"
DEFAULT_APP = "reading.ipynb"
SETTING = "cloudmri_reading_mode"  # in the tornado settings once the extension has set everything up

# The message types standalone voila lets a browser send to a kernel (voila/app.py, VoilaApp.init_settings):
# what ipywidgets and the Voilà page need, and no execute_request, inspect_request, complete_request,
# history_request, input_reply or debug_request.
VOILA_MESSAGE_TYPES = ("comm_open", "comm_close", "comm_msg", "comm_info_request", "kernel_info_request",
                       "shutdown_request")

# What the authorizer allows, by jupyter_server resource (the handlers' ``auth_resource``) and action (read for
# GET/HEAD/OPTIONS, write for POST/PUT/PATCH/DELETE: jupyter_server/auth/utils.py HTTP_METHOD_TO_AUTH_ACTION).
# Resources not listed (terminals, nbconvert, server, events, lsp, anything an extension adds) are refused.
ALLOWED_ACTIONS: Mapping[str, frozenset[str]] = {
    "api": frozenset({"read"}),  # api/status, api/me, api/spec.yaml
    "contents": frozenset({"read"}),  # list and read the apps folder; no save, upload, rename, delete
    "kernels": frozenset({"read"}),  # kernel models; "execute" on the kernel websocket only (see below)
    "kernelspecs": frozenset({"read"}),
    "sessions": frozenset({"read"}),
    "config": frozenset({"read"}),  # frontend settings; writing them is refused
    "csp": frozenset({"write"}),  # the browser's Content-Security-Policy reports, which are only logged
    "cloudmri": frozenset({"read", "write"}),  # the Cloud-MRI proxy: the service authorizes each request itself
}

# Paths below the base URL that the router lets through (regular expressions on the raw request path, as tornado
# routes it); the authorizer then decides on each request. All other paths answer 404.
ALLOWED_PATHS = (
    r"",  # the base URL itself: redirects to the default URL, the reading app
    r"voila(/.*)?",  # Voilà: render, tree, static, templates, themes, labextensions, files, api/shutdown
    r"api/?",  # the API version (the hub checks the server with it)
    r"api/(status|me|spec\.yaml)",
    r"api/(kernels|kernelspecs|sessions|contents|config)(/.*)?",  # reads; the kernel websocket
    r"kernelspecs/.*",  # kernel logos
    r"static/.*",  # jupyter_server's static files (favicons)
    r"api/security/csp-report",
    r"login",
    r"logout",
    r"oauth_callback",  # JupyterHub's OAuth login (JupyterHubIdentityProvider.get_handlers)
    r"cloudmri/.*",  # the Cloud-MRI health check and service proxy
)


#: Server extensions a reading-mode server does not load: JupyterLab and the classic notebook UI, the language
#: servers and terminals.
UNUSED_EXTENSIONS = ("jupyterlab", "notebook_shim", "jupyter_lsp", "jupyter_server_terminals")


def reading_mode_args(apps_dir: str | Path, default_app: str = DEFAULT_APP) -> list[str]:
    """Command-line options that start a Jupyter server (``jupyterhub-singleuser`` or ``jupyter server``) in
    reading mode, serving the notebooks of ``apps_dir`` with Voilà and opening ``default_app`` first.

    Args:
        apps_dir: the folder of the reading apps (``notebooks/apps/`` of the checkout or image); it becomes the
            server's root directory, so Voilà renders no other notebook. It must exist on the machine that runs
            the user's server; it need not be writable (reading mode writes nothing there).
        default_app: the notebook that ``{base_url}`` redirects to, relative to ``apps_dir``.

    Returns:
        Options to append to the server's command line, e.g. to ``Spawner.args``::

            --ServerApp.jpserver_extensions=cloudmri_jupyter.reading=True
            --ServerApp.jpserver_extensions=voila.server_extension=True
            --ServerApp.jpserver_extensions=jupyterlab=False   (… and the others of UNUSED_EXTENSIONS)
            --ServerApp.authorizer_class=cloudmri_jupyter.reading.ReadingAuthorizer
            --ServerApp.root_dir=/srv/cloudmri/notebooks/apps
            --ServerApp.default_url=/voila/render/reading.ipynb
            --ServerApp.terminals_enabled=False
            --MappingKernelManager.allowed_message_types=comm_open   (… one per type in VOILA_MESSAGE_TYPES)
            --VoilaConfiguration.show_tracebacks=False
            --VoilaConfiguration.progressive_rendering=False

        The server needs ``cloudmri_jupyter`` and ``voila`` importable, and a kernel that can run the apps (the
        ``cloudmri`` kernelspec, or any Python 3 kernel, to which Voilà falls back by language).

    Raises:
        ValueError: ``default_app`` is absolute or leaves ``apps_dir``.
    """
    apps = Path(apps_dir).expanduser().resolve()
    app = Path(default_app)
    if app.is_absolute() or ".." in app.parts:
        raise ValueError(f"default_app {default_app!r} must be a path inside the apps folder, e.g. 'reading.ipynb'")
    return [
        f"--ServerApp.jpserver_extensions={EXTENSION}=True",
        "--ServerApp.jpserver_extensions=voila.server_extension=True",
        # Not loaded at all in reading mode (their routes are refused anyway): less to start, less to expose.
        *(f"--ServerApp.jpserver_extensions={name}=False" for name in UNUSED_EXTENSIONS),
        f"--ServerApp.authorizer_class={EXTENSION}.ReadingAuthorizer",
        f"--ServerApp.root_dir={apps}",
        f"--ServerApp.default_url=/voila/render/{app.as_posix()}",
        "--ServerApp.terminals_enabled=False",
        *(f"--MappingKernelManager.allowed_message_types={kind}" for kind in VOILA_MESSAGE_TYPES),
        "--VoilaConfiguration.show_tracebacks=False",
        "--VoilaConfiguration.progressive_rendering=False",
    ]


class ReadingAuthorizer(Authorizer):
    """Allows reading, the Voilà page's kernel websocket and the Cloud-MRI proxy; refuses the rest (403).

    jupyter_server calls :meth:`is_authorized` for every request to a handler decorated with ``@authorized`` and
    for kernel websockets (https://jupyter-server.readthedocs.io/en/latest/operators/security.html#authorization).
    Refused here: starting, restarting, interrupting or deleting kernels (``POST /api/kernels`` …), creating or
    changing sessions, writing contents (save, upload, rename, delete), terminals, nbconvert, server shutdown,
    event streams, writing frontend config, and every resource it does not know.

    In JupyterHub it also checks the hub's ``access:servers`` scopes, as ``JupyterHubAuthorizer``
    (``jupyterhub/singleuser/extension.py``) does, so choosing this class loses none of the hub's checks.
    """

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if not handler.settings.get(SETTING):
            self.log.error("Reading mode: the %s extension did not load; refusing %s on %s", EXTENSION, action,
                           resource)
            return False
        if not self._hub_allows(user):
            return False
        if resource == "kernels" and action == "execute":
            # the kernel websocket (KernelWebsocketHandler.pre_get); its messages are filtered by type.
            # The same action on POST /api/kernels/<id>/restart|interrupt is refused.
            allowed = isinstance(handler, KernelWebsocketHandler)
        else:
            allowed = action in ALLOWED_ACTIONS.get(resource, ())
        if not allowed:
            self.log.warning("Reading mode: refused %s on %s (%s %s) for %s", action, resource,
                             handler.request.method, handler.request.path, getattr(user, "username", user))
        return allowed

    def _hub_allows(self, user: Any) -> bool:
        hub_auth = getattr(self.identity_provider, "hub_auth", None)
        if hub_auth is None:  # not under JupyterHub
            return True
        return bool(hub_auth.check_scopes(hub_auth.oauth_scopes, user.hub_user))


class _OutsideReadingPaths(Matcher):
    """Matches the requests whose path is not below the base URL or not in :data:`ALLOWED_PATHS`."""

    def __init__(self, base_url: str):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.allowed = re.compile("|".join(f"(?:{p})" for p in ALLOWED_PATHS))

    def match(self, request: Any) -> dict | None:
        path = request.path
        if path + "/" == self.base_url:
            return None
        if path.startswith(self.base_url) and self.allowed.fullmatch(path[len(self.base_url):]):
            return None
        return {}


class _NotInReadingModeHandler(web.ErrorHandler):
    """Answers 404 to every method, before authentication: the path does not exist in reading mode."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish({"message": "Not available in reading mode", "reason": None})


def _fail(serverapp: Any, problem: str) -> None:
    """Stop the server: better no server than one that is not in reading mode."""
    serverapp.log.critical("Reading mode cannot be set up, so the server stops: %s", problem)
    serverapp.exit(1)  # SystemExit, which the extension manager does not catch


def _link_jupyter_server_extension(serverapp: Any) -> None:
    """Before the server makes its authorizer: make it a :class:`ReadingAuthorizer`, as the option would.

    The extension alone thus sets reading mode; a different authorizer class that was configured on purpose
    stops the server.
    """
    if not issubclass(serverapp.authorizer_class, ReadingAuthorizer):
        if serverapp.authorizer_class is not AllowAllAuthorizer:
            _fail(serverapp, f"ServerApp.authorizer_class is {serverapp.authorizer_class.__name__}, "
                             f"not {EXTENSION}.ReadingAuthorizer")
        serverapp.authorizer_class = ReadingAuthorizer


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Check the authorizer, filter the kernels' websocket messages, route only the allowed paths."""
    try:
        if not isinstance(serverapp.authorizer, ReadingAuthorizer):
            _fail(serverapp, f"the authorizer is a {type(serverapp.authorizer).__name__}, not a ReadingAuthorizer")
        if not issubclass(serverapp.kernel_websocket_connection_class, ZMQChannelsWebsocketConnection):
            # the allowed_message_types filter lives in ZMQChannelsWebsocketConnection.handle_incoming_message
            _fail(serverapp, f"kernel websockets use {serverapp.kernel_websocket_connection_class.__name__}, which "
                             "may not filter message types")
        kernels = serverapp.kernel_manager
        allowed = list(getattr(kernels, "allowed_message_types", None) or [])
        if not allowed or set(allowed) - set(VOILA_MESSAGE_TYPES):
            kernels.allowed_message_types = list(VOILA_MESSAGE_TYPES)
        web_app = serverapp.web_app
        web_app.default_router.rules.insert(0, Rule(_OutsideReadingPaths(web_app.settings["base_url"]),
                                                    _NotInReadingModeHandler, {"status_code": 404}))
        web_app.settings[SETTING] = True
    except SystemExit:
        raise
    except Exception as exc:
        _fail(serverapp, repr(exc))
    serverapp.log.info("Reading mode: Voilà dashboards of %s; kernels accept only %s from browsers",
                       serverapp.root_dir, ", ".join(serverapp.kernel_manager.allowed_message_types))


def _jupyter_server_extension_points() -> list[dict]:
    """How jupyter_server finds the extension: this module, with its link and load functions."""
    return [{"module": EXTENSION}]
