"""The running workbench that user-server tests share."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from cloudmri_kernel import up
from cloudmri_kernel.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "python"


def _readable_by_everyone(path: Path) -> bool:
    """Every directory above ``path`` can be traversed by other accounts, and the file itself executed."""
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o005)


#: What starting user servers needs; test modules add these marks.
needs_user_servers = [
    pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "configurable-http-proxy").exists(),
                       reason="needs configurable-http-proxy from npm (./workbench setup installs it; in CI)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                       reason="servers run as their own system accounts only when the hub runs as root (CI does)"),
    pytest.mark.skipif(not (_readable_by_everyone(ROOT) and _readable_by_everyone(Path(os.path.realpath(
        VENV_PYTHON)))), reason="the checkout or its Python is private to its owner, so no other account can run "
        "a server from it (./workbench setup builds the venv on Debian's python3.11; CI's checkout is readable)"),
]


@pytest.fixture(scope="module")
def workbench():
    """`cloudmri up --demo` in a world-traversable directory, so only the data dir's own mode protects it."""
    root = Path(tempfile.mkdtemp(prefix="cloudmri-hub-", dir="/tmp"))
    root.chmod(0o755)
    prefix = f"cmt{secrets.token_hex(2)}-"
    settings = {"CLOUDMRI_HOMES_DIR": str(root / "homes"), "CLOUDMRI_SYSTEM_PREFIX": prefix,
                "CLOUDMRI_LOCAL_GPUS": "1"}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    bench = up.start(root / "data", port=free_port(), demo=True)
    try:
        yield bench
    finally:
        bench.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for account in pwd.getpwall():
            if account.pw_name.startswith(prefix):
                subprocess.run(["userdel", account.pw_name], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


