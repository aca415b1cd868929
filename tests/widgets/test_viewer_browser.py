"""The viewer's ES module in Debian's Chromium: drag window/level, scroll, pan, phase, difference and profile.

The page imports the viewer's ES module exactly as anywidget sends it (``tests.browser.open_widget``) and hands it
a minimal stand-in for the anywidget model (get/set/on/off/save_changes) holding the state and binary buffers that
:class:`Viewer` would send over the comm. Pixels are read back from the canvases; the state the page saves is
applied to the Python widget as the comm would. Screenshots for the docs go to ``docs/images/viewer*.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cloudmri_widgets import Viewer

from tests.browser import needs_chromium, open_widget

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, needs_chromium]

SNAPSHOT = """(state) => Object.fromEntries(["slice", "indices", "window", "level", "mode", "tool", "zoom", "pan",
  "difference", "profile"].map((name) => [name, state[name]]))"""


def _open(browser, viewer: Viewer, width=1100, height=700):
    return open_widget(browser, viewer, SNAPSHOT, width, height)


def _settle(page):
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def _pixel(page, panel: int, x: int, y: int) -> int:
    """The grey value at canvas pixel (x, y) of the panel-th panel (series first, then differences)."""
    return page.evaluate("([panel, x, y]) => document.querySelectorAll('.cmv-panel canvas')[panel]"
                         ".getContext('2d').getImageData(x, y, 1, 1).data[0]", [panel, x, y])


def _grey(value, window, level):
    """The grey level viewer.js gives ``value`` (JS Math.round rounds halves up)."""
    return int(np.floor(np.clip((value - (level - window / 2)) / window, 0, 1) * 255 + 0.5))


def _quadrants() -> tuple[np.ndarray, np.ndarray]:
    """Two complex series (4, 64, 64) of constant quadrants; the second is 1.5× brighter top left."""
    a = np.zeros((4, 64, 64), np.complex64)
    for z in range(4):
        a[z, :32, :32] = 100 * (z + 1)
        a[z, :32, 32:] = 50
        a[z, 32:, 32:] = 400
    a[:, :32] *= np.exp(0.5j)
    a[:, 32:] *= np.exp(-1j)
    b = a.copy()
    b[:, :32, :32] *= 1.5
    return a, b


def _box(page, panel: int):
    return page.locator(".cmv-panel canvas").nth(panel).bounding_box()


def test_window_level_slices_pan_phase_difference_and_profile(browser):
    a, b = _quadrants()
    viewer = Viewer([a, b], titles=["A", "B"], window=400, level=200, size=256)
    page = _open(browser, viewer)
    box = _box(page, 0)
    assert (box["width"], box["height"]) == (256, 256)  # 4 screen pixels per image pixel
    # Top left (image 16, 16 → canvas 64, 64) holds 100 in A and 150 in B at slice 0.
    assert _pixel(page, 0, 64, 64) == _grey(100, 400, 200) == 64
    assert _pixel(page, 1, 64, 64) == _grey(150, 400, 200)
    assert _pixel(page, 0, 192, 192) == 255  # 400 is the top of the window

    # Drag right 64 and down 32 screen pixels: a wider window and a higher level, linked in both panels.
    x0, y0 = box["x"] + 128, box["y"] + 128
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 64, y0 + 32, steps=8)
    assert page.evaluate("window.saved.length") == 0  # nothing goes to the kernel while dragging
    page.mouse.up()
    _settle(page)
    full_range = 600  # B's maximum (1.5 × 400) minus 0
    window, level = 400 + 64 * full_range / 256, 200 + 32 * full_range / 256
    saved = page.evaluate("window.saved")
    assert len(saved) == 1
    assert saved[-1]["window"] == pytest.approx(window) and saved[-1]["level"] == pytest.approx(level)
    assert _pixel(page, 0, 64, 64) == _grey(100, window, level)
    assert _pixel(page, 1, 64, 64) == _grey(150, window, level)

    # The wheel scrolls to slice 1 (A: 200, B: 300 top left).
    page.mouse.wheel(0, 100)
    _settle(page)
    assert page.evaluate("window.model.get('slice')") == 1
    assert _pixel(page, 0, 64, 64) == _grey(200, window, level)
    assert _pixel(page, 1, 64, 64) == _grey(300, window, level)

    # A preset button sets window and level at once.
    page.click("button[data-preset=full]")
    _settle(page)
    full_window, full_level = viewer.presets["full"]
    assert _pixel(page, 0, 64, 64) == _grey(200, full_window, full_level)

    # Pan by 64 screen pixels = 16 image pixels: the top-right quadrant's left edge moves into view at x 130.
    assert _pixel(page, 0, 130, 64) == _grey(50, full_window, full_level)
    page.click("text=Pan")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 64, y0, steps=4)
    page.mouse.up()
    _settle(page)
    assert page.evaluate("window.model.get('pan')") == [16, 0]
    assert _pixel(page, 0, 130, 64) == _grey(200, full_window, full_level)
    page.click("text=Reset view")

    # The difference panel (B − A) is mid grey where they agree and brighter where B is.
    page.check("text=Difference")
    _settle(page)
    assert page.locator(".cmv-panel canvas").count() == 3
    assert _pixel(page, 2, 192, 192) == 128
    assert _pixel(page, 2, 64, 64) == int(np.floor((0.5 + 100 / full_window) * 255 + 0.5))

    # Phase: 0.5 rad on the top half and −1 rad on the bottom, on a fixed −π…π scale.
    page.click("text=Phase")
    _settle(page)
    assert _pixel(page, 0, 64, 64) == _grey(0.5, 2 * np.pi, 0)
    assert _pixel(page, 0, 192, 192) == _grey(-1, 2 * np.pi, 0)
    assert _pixel(page, 2, 64, 64) == 128  # same phase in both series

    # A line profile across the top half, back in magnitude: the plotted values are the Python ones.
    page.click("text=Magnitude")
    page.click("text=Profile")
    page.mouse.move(box["x"] + 16, box["y"] + 64)
    page.mouse.down()
    page.mouse.move(box["x"] + 240, box["y"] + 64, steps=6)
    page.mouse.up()
    _settle(page)
    saved = page.evaluate("window.saved")[-1]
    assert saved["profile"] == [4, 16, 60, 16]
    plotted = np.array(page.evaluate("document.getElementById('app').cloudmriViewer.profile"))
    assert plotted.shape == (2, 57)
    assert plotted[0, 0] == pytest.approx(200) and plotted[0, -1] == pytest.approx(50)

    viewer.set_state(saved)  # what the comm does with the message save_changes() sends
    assert (viewer.slice, viewer.window, viewer.level) == (1, full_window, full_level)
    np.testing.assert_allclose(plotted, viewer.profile_values(), rtol=1e-5)
    page.close()


def _phantom(matrix=128, slices=16) -> np.ndarray:
    from cloudmri_kernel.mrd.phantom import _shepp_logan, _smooth_phase

    heights = np.linspace(-0.6, 0.6, slices)
    return np.stack([_shepp_logan(matrix, z) * np.exp(1j * _smooth_phase(matrix, z)) for z in heights]).astype(
        np.complex64)


def test_screenshots_for_the_docs(browser):
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    volume = _phantom()
    single = _open(browser, Viewer(volume, titles=["Shepp-Logan phantom"], size=320), width=760, height=560)
    single.evaluate("window.model.set('slice', 8); window.model.set('profile', [10, 70, 118, 70]);")
    _settle(single)
    assert np.max(single.evaluate("document.getElementById('app').cloudmriViewer.profile")) > 0.5
    single.locator(".cmv-root").screenshot(path=DOCS_IMAGES / "viewer.png")
    single.close()

    rng = np.random.default_rng(0)
    noisy = volume + (0.03 * (rng.standard_normal(volume.shape) + 1j * rng.standard_normal(volume.shape)))
    compare = _open(browser, Viewer([volume, noisy.astype(np.complex64)], titles=["reference", "noisy"], size=256),
                    width=900, height=520)
    compare.evaluate("window.model.set('slice', 8); window.model.set('difference', true);")
    _settle(compare)
    assert compare.locator(".cmv-panel:visible").count() == 3
    compare.locator(".cmv-root").screenshot(path=DOCS_IMAGES / "viewer-compare.png")
    compare.close()
    assert (DOCS_IMAGES / "viewer.png").stat().st_size > 10_000
