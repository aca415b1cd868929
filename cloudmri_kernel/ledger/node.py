"""The default ledger node: anvil (npm ``@foundry-rs/anvil``) on 127.0.0.1, its chain kept in a state file.

anvil loads ``--state FILE`` at start and writes it on a clean exit (SIGINT/SIGTERM) and every
``--state-interval`` seconds, so the chain, with every anchored root and grant, survives a restart; a crash
loses at most the last interval. The hard fork is pinned to the EVM version the contracts are compiled for
(:data:`cloudmri_kernel.ledger.compiler.EVM_VERSION`), so the local node tests exactly that target.

References:
    Foundry book, anvil reference (https://getfoundry.sh/anvil/reference/anvil).
    Ethereum JSON-RPC specification (https://ethereum.github.io/execution-apis/api-documentation/).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx

from cloudmri_kernel.crypto.keyfiles import make_private_dirs
from cloudmri_kernel.errors import CloudMRIError, UsageError
from cloudmri_kernel.ledger.compiler import EVM_VERSION
from cloudmri_kernel.processes import ProcessGroup

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = "anvil-state.json"


def find_anvil(explicit: str | Path | None = None) -> Path:
    """The anvil program: ``explicit``, else npm's native binary in node_modules, else ``anvil`` on PATH."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UsageError("anvil is not there: set CLOUDMRI_LEDGER_ANVIL to the program", explicit)
        return Path(explicit)
    # The platform package's native binary, not npm's node wrapper: signals then reach anvil itself.
    for native in sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil")):
        return native
    wrapper = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    found = shutil.which("anvil")
    if found is None:
        raise UsageError("anvil is not installed: run `npm ci` in the repository (package.json pins "
                         "@foundry-rs/anvil) or set CLOUDMRI_LEDGER_ANVIL")
    return Path(found)


class AnvilNode:
    """An anvil process serving JSON-RPC on 127.0.0.1:``port`` with its state in ``directory``.

    Args:
        directory: where ``anvil-state.json`` and ``anvil.log`` live (created 0700).
        port: TCP port on 127.0.0.1.
        anvil: the program (default: :func:`find_anvil`).
        state_interval_s: seconds between state dumps while running.
    """

    def __init__(self, directory: str | Path, port: int, anvil: str | Path | None = None,
                 state_interval_s: int = 2):
        self.directory = Path(directory)
        self.port = port
        self.program = find_anvil(anvil)
        self.state_interval_s = state_interval_s
        self._process: ProcessGroup | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.directory / STATE_FILE

    def command(self) -> list[str]:
        return [str(self.program), "--host", "127.0.0.1", "--port", str(self.port), "--hardfork", EVM_VERSION,
                "--state", str(self.state_file), "--state-interval", str(self.state_interval_s),
                "--accounts", "0"]

    def start(self, timeout: float = 30.0) -> None:
        """Start anvil and wait until it answers JSON-RPC."""
        make_private_dirs(self.directory)
        env = {key: value for key, value in os.environ.items() if not key.startswith("ANVIL_")}
        self._process = ProcessGroup(self.command(), env, self.directory / "anvil.log")
        self._process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.exited():
                log = self._process.log_since_start()
                self._process.kill()
                self._process = None
                raise CloudMRIError(f"anvil exited at start: {log.strip()[-400:] or 'no output'} "
                                    f"(is port {self.port} taken, or the state file broken?)", self.state_file)
            if rpc_ready(self.url):
                return
            time.sleep(0.05)
        self.stop()
        raise CloudMRIError(f"anvil did not answer on {self.url} within {timeout:g} s", self.directory / "anvil.log")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop anvil cleanly, which writes its state file."""
        if self._process is not None:
            self._process.stop(signal.SIGINT, timeout)
            self._process = None

    def kill(self) -> None:
        """Kill anvil without letting it write its state (a crash)."""
        if self._process is not None:
            self._process.kill()
            self._process = None

    def wait(self) -> int:
        return self._process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.exited()

    def __enter__(self) -> AnvilNode:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def rpc_ready(url: str) -> bool:
    """Whether a JSON-RPC node answers ``eth_chainId`` at ``url``."""
    try:
        reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1.0)
        return reply.status_code == 200 and "result" in reply.json()
    except (httpx.HTTPError, ValueError):
        return False
