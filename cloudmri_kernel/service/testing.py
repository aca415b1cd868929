"""Test helpers that ship with the package: the API service as a real child process (like JupyterHub's MockHub).

:class:`ServiceProcess` runs ``python -m cloudmri_kernel service --local`` on a free loopback port with its own
environment (data directory, catalog URL, chunk size), waits until ``GET /health`` answers, and can kill it
(SIGKILL, as a crash), stop it (Ctrl-C, as an operator) and start it again on the same port, so that tests and
benchmarks exercise what users run: uvicorn, the lifespan, the Dask cluster of the job runner, separate client
processes. The service runs in its own process group, and the group is killed when the service ends, so no
process (Dask workers included) outlives it. Its output is appended to ``DATA_DIR/service.log``.

Example:
    >>> env = service_env(tmp / "service", upload_chunk_mb=1)  # doctest: +SKIP
    >>> with ServiceProcess(env) as service:  # doctest: +SKIP
    ...     token = create_token(env, "alice", "siteA", ["researcher"])
    ...     Client(service.url, token).upload("scan.h5")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from cloudmri_kernel.processes import ProcessGroup, free_port

STARTUP_ATTEMPTS = 3  # a free port can be taken by another process between choosing and binding it
SETTINGS_PREFIX = "CLOUDMRI_"


def _base_env(base: Mapping[str, str] | None) -> dict[str, str]:
    """``base`` (default: this process's environment) without Cloud-MRI settings, which the caller sets."""
    source = os.environ if base is None else base
    return {key: value for key, value in source.items() if not key.startswith(SETTINGS_PREFIX)}


def service_env(data_dir: str | Path, catalog_url: str | None = None, upload_chunk_mb: int | None = None,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a service process and of the commands that manage it (``cloudmri service token``).

    Cloud-MRI settings inherited from ``base`` are dropped, so a test's service sees only these.

    Args:
        data_dir: the service's data directory (store, keys, tokens, staging; default SQLite catalog).
        catalog_url: SQLAlchemy URL of the catalog; default SQLite in ``data_dir``.
        upload_chunk_mb: upload chunk size in MiB; default the service's (8).
        base: the environment to start from; default this process's.

    Returns:
        A complete environment for :class:`subprocess.Popen`, e.g. with ``CLOUDMRI_DATA_DIR=/tmp/t/service``.
    """
    env = _base_env(base)
    env.update({"CLOUDMRI_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    env.pop("JUPYTERHUB_API_URL", None)
    if catalog_url is not None:
        env["CLOUDMRI_CATALOG_URL"] = catalog_url
    if upload_chunk_mb is not None:
        env["CLOUDMRI_UPLOAD_CHUNK_MB"] = str(upload_chunk_mb)
    return env


def create_token(env: Mapping[str, str], user: str, site: str, roles: list[str]) -> str:
    """Issue a local token with ``cloudmri service token create`` in the service's environment.

    Args:
        env: the service's environment (:func:`service_env`).
        user: who the token is for, e.g. ``alice``.
        site: the user's site, e.g. ``siteA``.
        roles: role names (researcher, radiologist, instructor, admin).

    Returns:
        The token.

    Raises:
        RuntimeError: the command failed; the message holds its error output.
    """
    command = [sys.executable, "-m", "cloudmri_kernel", "service", "token", "create", "--user", user,
               "--site", site]
    for role in roles:
        command += ["--role", role]
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"'cloudmri service token create' failed ({result.returncode}): {result.stderr}")
    return result.stdout.strip()


class ServiceProcess:
    """The Cloud-MRI API service in a child process on ``127.0.0.1``, for as long as the ``with`` block lasts.

    Args:
        env: the service's environment, from :func:`service_env` (it must set ``CLOUDMRI_DATA_DIR``).
        workers: Dask worker processes for reconstruction jobs (``--workers``); 0 runs jobs in the service.
        startup_timeout: seconds to wait for ``GET /health`` at each start.

    Attributes:
        url: the service's base URL, e.g. ``http://127.0.0.1:41234``; it stays the same across restarts.
        log_path: the file that collects the service's output over all its starts.
    """

    def __init__(self, env: Mapping[str, str], workers: int = 0, startup_timeout: float = 120.0):
        if "CLOUDMRI_DATA_DIR" not in env:
            raise ValueError("the service's environment needs CLOUDMRI_DATA_DIR: make it with service_env()")
        self.env = dict(env)
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.data_dir = Path(self.env["CLOUDMRI_DATA_DIR"])
        self.log_path = self.data_dir / "service.log"
        self.port: int | None = None
        self._group: ProcessGroup | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the service has not been started: use it inside `with ServiceProcess(env)`")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process ID of the running service (the leader of its process group)."""
        if self._group is None:
            raise RuntimeError("the service is not running")
        return self._group.pid

    @property
    def running(self) -> bool:
        return self._group is not None and not self._group.exited()

    def client_env(self, token: str, data_dir: str | Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a client process (``cloudmri upload`` …) that talks to this service.

        Args:
            token: the caller's token (:func:`create_token`).
            data_dir: the client's own data directory (it keeps the records of unfinished uploads there).
            base: the environment to start from; default this process's (its Cloud-MRI settings are dropped).
        """
        env = _base_env(base)
        env.update({"CLOUDMRI_DATA_DIR": str(data_dir), "CLOUDMRI_SERVICE_URL": self.url,
                    "CLOUDMRI_SERVICE_TOKEN": token})
        return env

    def start(self) -> None:
        """Start the service (on its former port if it ran before) and wait until it answers ``/health``.

        Raises:
            RuntimeError: it exited or did not answer within ``startup_timeout``; the message ends with its log.
        """
        if self.running:
            raise RuntimeError(f"the service is already running (PID {self.pid})")
        fixed_port = self.port is not None
        for attempt in range(1 if fixed_port else STARTUP_ATTEMPTS):
            if not fixed_port:
                self.port = free_port()
            if self._start(last_attempt=fixed_port or attempt == STARTUP_ATTEMPTS - 1):
                return

    def _start(self, last_attempt: bool) -> bool:
        """One start; False when the port was taken meanwhile (try another)."""
        command = [sys.executable, "-m", "cloudmri_kernel", "service", "--local", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", str(self.workers)]
        self._group = ProcessGroup(command, self.env, self.log_path)
        self._group.start()
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            while True:
                if self._group.exited():
                    output = self._group.log_since_start()
                    self.kill()
                    if "address already in use" in output and not last_attempt:
                        return False
                    raise RuntimeError(f"the service exited at startup; its log ({self.log_path}) says:\n"
                                       f"{output[-3000:]}")
                try:
                    if http.get(f"{self.url}/health").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    output = self._group.log_since_start()
                    self.kill()
                    raise RuntimeError(f"the service did not answer /health within {self.startup_timeout:.0f} s; "
                                       f"its log ({self.log_path}) says:\n{output[-3000:]}")
                time.sleep(0.05)

    def kill(self) -> None:
        """Kill the service and everything it started (SIGKILL, as in a crash) and wait for it; no-op if stopped."""
        if self._group is not None:
            self._group.kill()
            self._group = None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the service as Ctrl-C does (graceful shutdown); kill it if it takes longer than ``timeout`` s.

        Processes it leaves behind in its process group are killed too.
        """
        if self._group is not None:
            self._group.stop(signal.SIGINT, timeout)
            self._group = None

    def restart(self, timeout: float = 30.0) -> None:
        """Stop the service (see :meth:`stop`) if it runs and start it again on the same port."""
        self.stop(timeout)
        self.start()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *_exc_info) -> None:
        self.stop()
