"""Debian's Chromium driven by Playwright: the one browser every UI test uses (headless, nothing downloaded), and
the Voilà server the dashboard tests open in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
#: Marks a test (or a module, in ``pytestmark``) that drives Chromium: skipped, saying so, where it is missing.
needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                    reason="needs Debian's chromium (./workbench setup installs it)")


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
            try:  # once the port is open, wait for the first render rather than start a kernel per retry
                if httpx.get(url, timeout=max(2.0, deadline - time.monotonic())).status_code == 200:
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


WIDGET_ORIGIN = "http://widget.test"
WIDGET_PAGE = """<!doctype html><meta charset="utf-8"><link rel="stylesheet" href="widget.css">
<body style="margin: 8px; background: #fff"><div id="app"></div>
<script type="module">
import widget from "./widget.js";
const state = await (await fetch("state.json")).json();
const paths = state.__buffer_paths;
delete state.__buffer_paths;
for (let i = 0; i < paths.length; i++) {
  state[paths[i][0]] = new DataView(await (await fetch(`buffer${i}.bin`)).arrayBuffer());
}
const handlers = {};
window.saved = [];
window.sent = [];
const snapshot = SNAPSHOT;
window.model = {
  get: (name) => state[name],
  set(name, value) { state[name] = value; for (const callback of handlers[`change:${name}`] || []) callback(); },
  on(event, callback) { (handlers[event] ||= []).push(callback); },
  off(event, callback) { handlers[event] = (handlers[event] || []).filter((c) => c !== callback); },
  save_changes() { window.saved.push(snapshot(state)); },
  send(content) { window.sent.push(content); },
};
widget.render({ model: window.model, el: document.getElementById("app") });
window.ready = true;
</script>"""


def open_widget(browser, widget, snapshot: str, width: int = 1100, height: int = 700):
    """A page showing an anywidget through its ES module and CSS exactly as anywidget sends them (``widget._esm``,
    ``widget._css``), with a minimal stand-in for
    anywidget's model (get/set/on/off/save_changes/send) holding the state and binary buffers the widget would
    send over the comm; everything is served from memory (nothing is downloaded).

    ``snapshot`` is a JavaScript function of the state whose result each ``save_changes()`` appends to
    ``window.saved`` (what the comm would carry to the kernel); ``send(content)`` appends to ``window.sent``.
    """
    from ipywidgets.widgets.widget import _remove_buffers

    state, paths, buffers = _remove_buffers(widget.get_state())
    files = {
        "/": (WIDGET_PAGE.replace("SNAPSHOT", snapshot).encode(), "text/html"),
        "/widget.js": (widget._esm.encode(), "text/javascript"),
        "/widget.css": (widget._css.encode(), "text/css"),
        "/state.json": (json.dumps({**state, "__buffer_paths": paths}).encode(), "application/json"),
        **{f"/buffer{i}.bin": (bytes(b), "application/octet-stream") for i, b in enumerate(buffers)},
    }

    def serve(route):
        path = route.request.url.removeprefix(WIDGET_ORIGIN)
        if path in files:
            body, content_type = files[path]
            route.fulfill(status=200, body=body, content_type=content_type)
        else:
            route.fulfill(status=404, body=b"")

    page = browser.new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(f"{WIDGET_ORIGIN}/**", serve)
    page.goto(f"{WIDGET_ORIGIN}/")
    page.wait_for_function("window.ready === true", timeout=15_000)
    assert errors == []
    return page
