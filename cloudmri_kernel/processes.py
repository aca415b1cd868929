"""A child process in its own process group, its output appended to a log file: starting it, asking whether it
ended, and stopping it together with everything it started (Dask workers, kernels, the proxy).

Used by ``cloudmri up`` for JupyterHub and by the test helpers that run the API service and a Jupyter server as
real processes, so that no process outlives its owner.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProcessGroup:
    """One command run as the leader of a new process group.

    Args:
        command: the program and its arguments.
        env: its complete environment.
        log_path: its standard output and error are appended here.
        cwd: its working directory (default: this process's).
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: str | Path,
                 cwd: str | Path | None = None):
        self.command, self.env, self.log_path, self.cwd = list(command), dict(env), Path(log_path), cwd
        self._process: subprocess.Popen | None = None
        self._log_start = 0

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.command[0]} is not running")
        return self._process.pid

    @property
    def started(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.command[0]} is already running (PID {self._process.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.kill)

    def exited(self) -> bool:
        """Whether the leader has ended. It is not reaped here, so its group can still be signalled."""
        if self._process is None or self._process.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def wait(self) -> int:
        """Block until the leader ends; its exit status."""
        return self._process.wait()

    def log_since_start(self) -> str:
        """What the process wrote since its last start."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the leader (``how``: SIGINT as Ctrl-C, SIGTERM as an operator), wait up to ``timeout`` s,
        then kill the whole group; its exit status (None if it was not running)."""
        if self._process is None:
            return None
        if not self.exited():
            self._process.send_signal(how)
        deadline = time.monotonic() + timeout
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.kill()

    def kill(self, settle: float = 5.0) -> int | None:
        """SIGKILL the whole group (as in a crash), reap the leader, and wait up to ``settle`` s until no member
        is still running (SIGKILL is delivered at once, but a member leaves the process table only as it finishes
        exiting); no-op when it is not running."""
        if self._process is None:
            return None
        group = self._process.pid
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self._process.wait()
        deadline = time.monotonic() + settle
        while running_members(group) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._process = None
        atexit.unregister(self.kill)
        return code


def running_members(group: int) -> list[int]:
    """PIDs of the processes of a process group that have not exited (zombies, which only wait to be reaped,
    are not counted), read from ``/proc`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == group and fields[0] != "Z":
            found.append(int(entry.name))
    return found
