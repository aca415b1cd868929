"""The viewer in a real Voilà page: anywidget's front end loads viewer.js, and state travels both ways.

A notebook shows the viewer, a Label that echoes the kernel's ``slice``/``window``/``level``, and a Button
whose handler sets ``viewer.slice`` in the kernel. Dragging and scrolling in Chromium must reach the kernel;
the button's change must reach the canvas.
"""

from __future__ import annotations

import pytest

from tests.browser import CHROMIUM, needs_chromium, notebook_file
from tests.browser import voila as voila_server
from tests.widgets.test_viewer_browser import _grey, _pixel, _settle

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, needs_chromium]

NOTEBOOK = '''\
import ipywidgets as widgets
import numpy as np
from cloudmri_widgets import Viewer

a = np.zeros((4, 64, 64), np.float32)
for z in range(4):
    a[z, :32, :32] = 100 * (z + 1)
viewer = Viewer([a, 2 * a], titles=["A", "B"], window=400, level=200, size=256)
echo = widgets.Label(value="kernel: nothing yet")
echo.add_class("kernel-echo")
viewer.observe(lambda _: setattr(echo, "value", f"slice={viewer.slice} window={viewer.window:.2f} "
                                               f"level={viewer.level:.2f}"), names=["slice", "window", "level"])
last = widgets.Button(description="last slice")
last.on_click(lambda _: setattr(viewer, "slice", viewer.shape[0] - 1))
widgets.VBox([viewer, echo, last])
'''


@pytest.fixture
def voila(tmp_path):
    with voila_server(notebook_file(tmp_path / "viewer.ipynb", NOTEBOOK)) as url:
        yield url


def test_drag_and_scroll_reach_the_kernel_and_kernel_changes_reach_the_canvas(voila):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(voila)
            page.wait_for_selector(".cmv-panel canvas", timeout=45_000)
            _settle(page)
            assert _pixel(page, 0, 64, 64) == _grey(100, 400, 200)

            box = page.locator(".cmv-panel canvas").first.bounding_box()
            x0, y0 = box["x"] + 128, box["y"] + 128
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + 64, y0 + 32, steps=8)
            page.mouse.up()
            page.mouse.wheel(0, 100)
            window, level = 400 + 64 * 800 / 256, 200 + 32 * 800 / 256  # B's range 0…800 over 256 pixels
            echo = page.locator(".kernel-echo")
            playwright.expect(echo).to_have_text(f"slice=1 window={window:.2f} level={level:.2f}", timeout=15_000)
            _settle(page)
            assert _pixel(page, 0, 64, 64) == _grey(200, window, level)
            assert _pixel(page, 1, 64, 64) == _grey(400, window, level)

            page.click("text=last slice")
            playwright.expect(echo).to_contain_text("slice=3 ", timeout=15_000)
            page.wait_for_function("document.querySelector('.cmv-root input[type=range]').value === '3'")
            _settle(page)
            assert _pixel(page, 0, 64, 64) == _grey(400, window, level)
        finally:
            browser.close()
