"""Test helpers that ship with the package: a real ``jupyter server`` as a child process.

:class:`JupyterServerProcess` runs ``python -m jupyter_server`` on a port of 127.0.0.1 that the system picks,
with its own Jupyter config, data and runtime directories (so the user's ``~/.jupyter`` plays no part), reads the
port from the server's runtime file, and waits until ``GET {base_url}api/status`` answers. The server runs in its
own process group; when it ends, the group is killed, so no kernel outlives it. Its output goes to
``STATE_DIR/jupyter-server.log``.

Example:
    >>> env = service.client_env(token, tmp / "client")  # doctest: +SKIP
    >>> with JupyterServerProcess(env, tmp / "jupyter", config_path=["extensions/jupyter-config"]) as server:
    ...     httpx.get(server.url + "cloudmri/health", headers=server.headers())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from cloudmri_kernel.processes import ProcessGroup


class JupyterServerProcess:
    """``jupyter server`` in a child process on ``127.0.0.1``, for as long as the ``with`` block lasts.

    Args:
        env: the server's environment (its kernels and extensions see it too), e.g. with ``CLOUDMRI_SERVICE_URL``.
        state_dir: where the server's root directory, Jupyter directories and log go.
        base_url: the server's base URL, e.g. ``/user/alice/`` as under JupyterHub.
        config_path: extra Jupyter config directories (``JUPYTER_CONFIG_PATH``), e.g. one whose
            ``jupyter_server_config.d`` enables an extension.
        args: further command-line options, e.g. ``["--CloudMRIExtension.timeout=5"]``.
        startup_timeout: seconds to wait for the server to answer.

    Attributes:
        token: the server's random token (:meth:`headers` sends it).
        log_path: the file that collects the server's output.
    """

    def __init__(self, env: Mapping[str, str], state_dir: str | Path, base_url: str = "/",
                 config_path: Sequence[str | Path] = (), args: Sequence[str] = (), startup_timeout: float = 120.0):
        if not (base_url.startswith("/") and base_url.endswith("/")):
            raise ValueError(f"base_url {base_url!r} must start and end with '/', e.g. '/user/alice/'")
        self.state_dir = Path(state_dir)
        self.base_url = base_url
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(24)
        self.log_path = self.state_dir / "jupyter-server.log"
        self.env = dict(env)
        self.env.update({
            "JUPYTER_CONFIG_DIR": str(self.state_dir / "config"),
            "JUPYTER_DATA_DIR": str(self.state_dir / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.state_dir / "runtime"),
            "JUPYTER_CONFIG_PATH": os.pathsep.join(str(Path(p).resolve()) for p in config_path),
            "PYTHONUNBUFFERED": "1",
        })
        self.port: int | None = None
        self._group: ProcessGroup | None = None

    @property
    def url(self) -> str:
        """The server's URL with its base URL, e.g. ``http://127.0.0.1:41234/user/alice/``."""
        if self.port is None:
            raise RuntimeError("the server has not been started: use it inside `with JupyterServerProcess(...)`")
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def pid(self) -> int:
        if self._group is None:
            raise RuntimeError("the server is not running")
        return self._group.pid

    def headers(self) -> dict[str, str]:
        """Headers that authenticate a request to the server with its token."""
        return {"Authorization": f"token {self.token}"}

    def start(self) -> None:
        """Start the server and wait until it answers.

        Raises:
            RuntimeError: it exited or did not answer within ``startup_timeout``; the message ends with its log.
        """
        if self._group is not None:
            raise RuntimeError(f"the server is already running (PID {self._group.pid})")
        root = self.state_dir / "root"
        root.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   "--ServerApp.port=0", "--ServerApp.port_retries=0", f"--ServerApp.base_url={self.base_url}",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}", *self.args]
        if os.geteuid() == 0:
            command.append("--allow-root")
        self._group = ProcessGroup(command, self.env, self.log_path)
        self._group.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self) -> None:
        info_file = self.state_dir / "runtime" / f"jpserver-{self._group.pid}.json"
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            while True:
                if self._group.exited():
                    raise RuntimeError(f"jupyter server exited at startup; its log ({self.log_path}) says:\n"
                                       f"{self._group.log_since_start()[-4000:]}")
                if self.port is None and info_file.exists():
                    try:
                        self.port = json.loads(info_file.read_text())["port"]
                    except (ValueError, KeyError):  # caught while the server writes it
                        pass
                if self.port is not None:
                    try:
                        if http.get(f"{self.url}api/status", headers=self.headers()).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter server did not answer within {self.startup_timeout:.0f} s; its log "
                                       f"({self.log_path}) says:\n{self._group.log_since_start()[-4000:]}")
                time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server as its operator does (SIGTERM: kernels are shut down), then kill what is left."""
        if self._group is not None:
            self._group.stop(signal.SIGTERM, timeout)
            self._group = None

    def kill(self) -> None:
        """Kill the server's process group (SIGKILL) and reap the server; no-op when it is not running."""
        if self._group is not None:
            self._group.kill()
            self._group = None

    def __enter__(self) -> JupyterServerProcess:
        self.start()
        return self

    def __exit__(self, *_exc_info) -> None:
        self.stop()
