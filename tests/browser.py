"""Debian's Chromium driven by Playwright: the one browser every UI test uses (headless, nothing downloaded), and
the Voilà server the dashboard tests open in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        yield chromium
        chromium.close()


def notebook_file(path: Path, source: str) -> Path:
    """A one-cell notebook on the python3 kernel (what the Voilà tests serve)."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


@contextmanager
def voila(notebook: Path, env: dict[str, str] | None = None, timeout: float = 60.0,
          log: Path | None = None) -> Iterator[str]:
    """Voilà serving ``notebook`` on a free loopback port, this checkout's widgets importable; yields its URL.

    The server's log is ``log`` (default ``voila.log`` beside the notebook); a server that does not answer
    within ``timeout`` fails the test with the log's end.
    """
    import cloudmri_widgets
    import httpx

    from cloudmri_kernel.processes import free_port

    env = dict(os.environ if env is None else env)
    package_root = str(Path(cloudmri_widgets.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    port, log = free_port(), log or notebook.parent / "voila.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
        cwd=notebook.parent, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"voila did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def voila_as(app: Path, service_url: str, token: str, data_dir: Path, log: Path) -> Iterator[str]:
    """Voilà serving ``app`` with one user's service token and nothing else of this process's Cloud-MRI settings,
    as the hub's reading-mode server would; yields its URL."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLOUDMRI_")}
    env.update({"CLOUDMRI_SERVICE_URL": service_url, "CLOUDMRI_SERVICE_TOKEN": token,
                "CLOUDMRI_DATA_DIR": str(data_dir)})
    with voila(app, env, log=log) as address:
        yield address
