"""Test helpers that ship with the package: a throw-away PostgreSQL server for tests and benchmarks.

Example:
    >>> with PostgresServer() as server:  # doctest: +SKIP
    ...     catalog = Catalog.open(server.create_database("demo"))
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from cloudmri_kernel.processes import free_port

DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
STARTUP_ATTEMPTS = 3  # a free port can be taken by another process between choosing and binding it


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, for as long as the ``with`` block lasts.

    ``initdb`` makes the cluster (trust authentication, no fsync: fast and disposable); ``postgres`` runs as a
    child process listening on 127.0.0.1 only, on a free port, with its Unix socket in the temporary directory.
    When run as root, the cluster belongs to the ``postgres`` system user and the binaries run as that user
    (PostgreSQL refuses to run as root). Leaving the block stops the server (fast shutdown, then kill) and
    removes the directory, also when the block raised.

    Args:
        bin_dir: directory holding ``initdb`` and ``postgres``; default: :meth:`find_bin_dir`.
        startup_timeout: seconds to wait for the server to accept connections.

    Example:
        >>> with PostgresServer() as server:  # doctest: +SKIP
        ...     url = server.create_database("test_catalog")
    """

    def __init__(self, bin_dir: Path | None = None, startup_timeout: float = 60.0):
        self.bin_dir = bin_dir or self.find_bin_dir()
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH "
                               "(Debian: apt-get install postgresql)")
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.directory: Path | None = None
        self.process: subprocess.Popen | None = None
        self._user = _server_user()

    @staticmethod
    def find_bin_dir() -> Path | None:
        """The newest PostgreSQL's binary directory (Debian's layout first, then PATH), or None."""
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda path: int(re.sub(r"\D", "", Path(path).parts[-3]) or 0))
        found = debian[-1] if debian else shutil.which("initdb")
        return Path(found).parent if found else None

    @classmethod
    def available(cls) -> bool:
        """Whether a server can be started here: PostgreSQL is installed and, as root, a ``postgres`` user exists."""
        if cls.find_bin_dir() is None:
            return False
        try:
            _server_user()
        except RuntimeError:
            return False
        return True

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database as the superuser ``postgres``."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` on this server."""
        if self.port is None:
            raise RuntimeError("the PostgreSQL test server is not running: use it inside `with PostgresServer()`")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL.

        Args:
            name: lower-case letters, digits and underscores, e.g. ``test_catalog_3``.
        """
        self._execute(f'CREATE DATABASE "{_checked_name(name)}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (if it exists), closing the connections that still use it."""
        self._execute(f'DROP DATABASE IF EXISTS "{_checked_name(name)}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        self.directory = Path(tempfile.mkdtemp(prefix="cloudmri-postgres-"))
        try:
            if self._user is not None:
                os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
            self._run([self.bin_dir / "initdb", "-D", self.directory / "data", "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            for attempt in range(STARTUP_ATTEMPTS):
                if self._start(last_attempt=attempt == STARTUP_ATTEMPTS - 1):
                    break
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, *_exc_info) -> None:
        self._cleanup()

    def _start(self, last_attempt: bool) -> bool:
        """Start the server on a free port; False when the port was taken meanwhile (try another)."""
        self.port = free_port()
        log_path = self.directory / "postgres.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.bin_dir / "postgres", "-D", self.directory / "data", "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, **self._as_server_user())
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                self.process = None
                output = log_path.read_text(errors="replace")
                if "could not bind" in output and not last_attempt:
                    return False
                raise RuntimeError(f"the PostgreSQL test server exited at startup:\n{output[-2000:]}")
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                connect_timeout=1).close()
                return True
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the PostgreSQL test server did not accept connections within "
                                       f"{self.startup_timeout:.0f} s; its log is {log_path}") from None
                time.sleep(0.05)

    def _stop(self) -> None:
        if self.process is None:
            return
        # SIGINT is PostgreSQL's fast shutdown (disconnect clients, checkpoint); SIGQUIT the immediate one.
        for stop_signal, timeout in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, None)):
            if self.process.poll() is None:
                os.kill(self.process.pid, stop_signal)
            try:
                self.process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def _cleanup(self) -> None:
        try:
            self._stop()
        finally:
            self.port = None
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def _execute(self, statement: str) -> None:
        if self.port is None:
            raise RuntimeError("the PostgreSQL test server is not running: use it inside `with PostgresServer()`")
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(statement)

    def _run(self, command: list) -> None:
        result = subprocess.run(command, cwd=self.directory, capture_output=True, text=True,
                                **self._as_server_user())
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}):\n{result.stderr[-2000:]}")

    def _as_server_user(self) -> dict:
        """Popen arguments that run a server binary as the ``postgres`` user when we are root.

        Popen switches user itself instead of going through ``runuser``, so the child is the server process and
        a signal sent to its PID reaches PostgreSQL directly.
        """
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": [],
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}}


def _server_user() -> pwd.struct_passwd | None:
    """The ``postgres`` system user when running as root, else None (the server runs as the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("PostgreSQL refuses to run as root, and there is no `postgres` system user to run it "
                           "as: run the tests as another user, or install Debian's postgresql package") from None


def _checked_name(name: str) -> str:
    if not DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database name {name!r}: use lower-case letters, digits and underscores")
    return name
