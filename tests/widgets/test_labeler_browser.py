"""The labeler's ES module in Debian's Chromium: a rectangle, a polygon and a brush stroke drawn with the mouse
reach the Python widget as the comm would deliver them; select, delete and undo; a screenshot for the docs; and
the same in a real Voilà page, where anywidget's front end carries the state to the kernel and back.

As for the viewer, the page imports the labeler's ES module exactly as anywidget sends it and hands it a minimal
stand-in for the anywidget model holding the state and binary buffers :class:`Labeler` sends.
"""

from __future__ import annotations

import numpy as np
import pytest
from cloudmri_widgets import Labeler

from tests.browser import needs_chromium, notebook_file, open_widget
from tests.browser import voila as voila_server
from tests.widgets.test_viewer_browser import DOCS_IMAGES, _phantom, _settle

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, needs_chromium]

SNAPSHOT = """(state) => ({ rois: state.rois, selected: state.selected, slice: state.slice, tool: state.tool,
  label: state.label, message: state.message,
  mask: Array.from(new Uint8Array(state.mask.buffer, state.mask.byteOffset, state.mask.byteLength)) })"""


def _open(browser, labeler: Labeler, width=900, height=700):
    return open_widget(browser, labeler, SNAPSHOT, width, height)


def _apply(labeler: Labeler, saved: dict) -> None:
    """What the comm does with the message save_changes() sends: JSON state plus the mask as a binary buffer."""
    labeler.set_state({"rois": saved["rois"], "selected": saved["selected"], "slice": saved["slice"],
                       "mask": memoryview(bytes(saved["mask"]))})


def test_rectangle_polygon_and_brush_drawn_with_the_mouse_reach_python(browser):
    image = np.zeros((2, 64, 64), np.float32)
    image[:, 16:48, 16:48] = 1
    labeler = Labeler(image, {"lesion": "#e6194b", "liver": "#3cb44b"}, size=256)
    page = _open(browser, labeler)
    canvas = page.locator(".cml-root canvas")
    box = canvas.bounding_box()
    assert (box["width"], box["height"]) == (256, 256)  # 4 screen pixels per image pixel
    x0, y0 = box["x"], box["y"]

    # A rectangle dragged from canvas (32, 32) to (96, 80): image corners (8, 8) and (24, 20).
    page.mouse.move(x0 + 32, y0 + 32)
    page.mouse.down()
    page.mouse.move(x0 + 96, y0 + 80, steps=6)
    assert page.evaluate("window.saved.length") == 0  # nothing goes to the kernel while dragging
    page.mouse.up()
    # A polygon with the second label: three clicks, then a click next to the first vertex closes it.
    page.click("button[data-label=liver]")
    page.click("button[data-tool=polygon]")
    for x, y in [(160, 40), (240, 40), (200, 120), (162, 42)]:
        page.mouse.click(x0 + x, y0 + y)
    _settle(page)
    saved = page.evaluate("window.saved")[-1]
    assert saved["rois"] == [
        {"slice": 0, "label": "lesion", "kind": "rectangle", "points": [[8, 8], [24, 20]]},
        {"slice": 0, "label": "liver", "kind": "polygon", "points": [[40, 10], [60, 10], [50, 30]]}]
    _apply(labeler, saved)
    assert labeler.rois == saved["rois"]
    masks = labeler.masks()
    assert (masks[0, 8:20, 8:24] == 1).all() and np.count_nonzero(masks[0] == 1) == 16 * 12
    assert masks[0, 11, 50] == 2 and masks[0, 28, 50] == 2 and masks[0, 11, 41] == 2 and masks[0, 28, 45] == 0

    # A rectangle dragged past the image's right edge stops at the edge (x = 64), on slice 1.
    page.mouse.wheel(0, 100)
    page.click("button[data-tool=rectangle]")
    page.mouse.move(x0 + 200, y0 + 200)
    page.mouse.down()
    page.mouse.move(x0 + 400, y0 + 240, steps=4)
    page.mouse.up()
    _settle(page)
    saved = page.evaluate("window.saved")[-1]
    assert saved["rois"][-1] == {"slice": 1, "label": "liver", "kind": "rectangle", "points": [[50, 50], [64, 60]]}

    # A brush stroke of radius 2 along row 40 from x 10 to x 20 paints the mask with label 2 (liver).
    page.click("button[data-tool=brush]")
    page.fill(".cml-root input[type=number]", "2")
    page.dispatch_event(".cml-root input[type=number]", "change")
    assert page.evaluate("window.model.get('brush_radius')") == 2
    page.mouse.move(x0 + 40, y0 + 160)
    page.mouse.down()
    page.mouse.move(x0 + 80, y0 + 160, steps=5)
    page.mouse.up()
    _settle(page)
    saved = page.evaluate("window.saved")[-1]
    _apply(labeler, saved)
    painted = labeler.painted()
    assert not painted[0].any() and set(np.unique(painted[1])) == {0, 2}
    rows, cols = np.nonzero(painted[1])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (38, 41, 8, 21)
    assert labeler.masks()[1, 40, 10] == 2

    # Select the slice-1 rectangle and delete it; Ctrl+Z asks the kernel to undo.
    page.click("button[data-tool=select]")
    page.mouse.click(x0 + 220, y0 + 220)
    assert page.evaluate("window.saved")[-1]["selected"] == 2
    page.click("text=Delete ROI")
    saved = page.evaluate("window.saved")[-1]
    assert len(saved["rois"]) == 2 and saved["selected"] == -1
    page.keyboard.press("Control+z")
    assert page.evaluate("window.sent") == [{"event": "undo"}]
    _apply(labeler, saved)
    labeler.undo()  # what the kernel does with that message: the rectangle is back
    assert labeler.rois[-1]["points"] == [[50, 50], [64, 60]]
    page.close()


def test_zoom_pan_window_presets_and_drawing_stay_in_image_pixels(browser):
    image = np.zeros((1, 64, 64), np.float32)
    image[0, :, 32:] = 4
    image[0, 0, 0] = 8  # "full" spans 0…8, "auto" (0.5–99.5th percentile) 0…4
    labeler = Labeler(image, ["lesion"], size=256, presets={"bright": [1.0, 0.5]})
    assert list(labeler.presets) == ["auto", "full", "bright"]
    page = _open(browser, labeler)
    canvas = page.locator(".cml-root canvas")
    box = canvas.bounding_box()
    x0, y0 = box["x"], box["y"]

    # Ctrl+wheel over the image centre: zoom 2 about the pointer (the centre stays put, so no pan; Chromium
    # rounds pointer positions to whole CSS pixels, hence the tolerance of a fraction of a screen pixel).
    page.mouse.move(x0 + 128, y0 + 128)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -np.log(2) / 0.002)
    page.keyboard.up("Control")
    assert page.evaluate("window.model.get('zoom')") == pytest.approx(2)
    assert page.evaluate("window.model.get('pan')") == pytest.approx([0, 0], abs=0.1)
    # At zoom 2 the canvas shows image x, y 16…48: a drag from canvas (64, 64) to (128, 96) is (24, 24)-(32, 28).
    page.mouse.move(x0 + 64, y0 + 64)
    page.mouse.down()
    page.mouse.move(x0 + 128, y0 + 96, steps=4)
    page.mouse.up()
    _settle(page)
    (roi,) = page.evaluate("window.saved")[-1]["rois"]
    assert roi["points"] == [pytest.approx([24, 24], abs=0.1), pytest.approx([32, 28], abs=0.1)]

    # Shift+drag pans by 64 screen pixels = 8 image pixels; the same screen drag now lands 8 pixels to the left.
    page.mouse.move(x0 + 100, y0 + 200)
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(x0 + 164, y0 + 200, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert page.evaluate("window.model.get('pan')") == pytest.approx([8, 0], abs=0.1)
    assert len(page.evaluate("window.saved")[-1]["rois"]) == 1  # panning drew nothing
    page.mouse.move(x0 + 64, y0 + 64)
    page.mouse.down()
    page.mouse.move(x0 + 128, y0 + 96, steps=4)
    page.mouse.up()
    _settle(page)
    assert page.evaluate("window.saved")[-1]["rois"][-1]["points"] == [pytest.approx([16, 24], abs=0.1),
                                                                       pytest.approx([24, 28], abs=0.1)]

    # A right drag of 64 screen pixels to the right widens the window by a quarter of the data range (8).
    window = page.evaluate("window.model.get('window')")
    page.mouse.move(x0 + 100, y0 + 100)
    page.mouse.down(button="right")
    page.mouse.move(x0 + 164, y0 + 100, steps=4)
    page.mouse.up(button="right")
    assert page.evaluate("window.model.get('window')") == pytest.approx(window + 2)
    # Keys: 3 = the third preset ("bright"), 2 = "full", 0 = zoom 1 and no pan.
    canvas.focus()
    page.keyboard.press("3")
    assert page.evaluate("[window.model.get('window'), window.model.get('level')]") == [1.0, 0.5]
    page.keyboard.press("2")
    assert page.evaluate("[window.model.get('window'), window.model.get('level')]") == pytest.approx(
        labeler.presets["full"])
    playwright.expect(page.locator("button.cml-on[data-preset]")).to_have_text(["full"])  # drawn on the next frame
    page.keyboard.press("0")
    assert page.evaluate("[window.model.get('zoom'), ...window.model.get('pan')]") == [1, 0, 0]
    page.close()


def test_screenshot_for_the_docs(browser):
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    volume = _phantom()
    labeler = Labeler(volume, {"lesion": "#e6194b", "ventricle": "#4363d8", "white matter": "#3cb44b"}, size=384,
                      slice=8)
    painted = np.zeros(labeler.shape, np.uint8)
    yy, xx = np.mgrid[:128, :128]
    painted[8][(xx - 84) ** 2 + (yy - 80) ** 2 <= 36] = 3
    labeler.mask = painted.tobytes()
    labeler.rois = [{"slice": 8, "label": "lesion", "kind": "ellipse", "points": [[40, 70], [56, 86]]},
                    {"slice": 8, "label": "ventricle", "kind": "polygon",
                     "points": [[54, 40], [64, 34], [74, 40], [70, 58], [58, 58]]},
                    {"slice": 8, "label": "lesion", "kind": "rectangle", "points": [[78, 30], [92, 44]]}]
    labeler.selected = 2
    page = _open(browser, labeler, width=760, height=620)
    _settle(page)
    assert page.locator(".cml-status").inner_text().startswith("slice 9/16 · 3 ROI(s)")
    page.locator(".cml-root").screenshot(path=DOCS_IMAGES / "labeler.png")
    page.close()
    assert (DOCS_IMAGES / "labeler.png").stat().st_size > 10_000


# ---- in a real Voilà page: anywidget's own front end, the comm both ways, validation and undo in the kernel

NOTEBOOK = '''\
import ipywidgets as widgets
import numpy as np
from cloudmri_widgets import Labeler

image = np.zeros((2, 64, 64), np.float32)
image[:, 16:48, 16:48] = 1
labeler = Labeler(image, {"lesion": "#e6194b", "liver": "#3cb44b"}, size=256)
echo = widgets.Label(value="kernel: nothing yet")
echo.add_class("kernel-echo")
def show(_):
    echo.value = (f"rois={[(r['kind'], r['points']) for r in labeler.rois]} "
                  f"painted={int(np.count_nonzero(labeler.painted()))} masked={int(np.count_nonzero(labeler.masks()))}")
labeler.observe(show, names=["rois", "mask"])
widgets.VBox([labeler, echo])
'''


@pytest.fixture
def voila(tmp_path):
    """Voilà serving NOTEBOOK on a free local port."""
    with voila_server(notebook_file(tmp_path / "labeler.ipynb", NOTEBOOK)) as url:
        yield url


def test_shapes_strokes_and_undo_travel_through_the_comm(voila, browser):
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto(voila)
    page.wait_for_selector(".cml-root canvas", timeout=45_000)
    _settle(page)
    box = page.locator(".cml-root canvas").bounding_box()
    x0, y0 = box["x"], box["y"]
    echo = page.locator(".kernel-echo")

    # A rectangle dragged past the bottom edge: the kernel holds it stopped at the edge (y = 64).
    page.mouse.move(x0 + 32, y0 + 200)
    page.mouse.down()
    page.mouse.move(x0 + 96, y0 + 300, steps=6)
    page.mouse.up()
    playwright.expect(echo).to_have_text("rois=[('rectangle', [[8, 50], [24, 64]])] painted=0 masked=224",
                                         timeout=15_000)
    # A brush stroke: the mask crosses as bytes and the kernel counts its pixels (radius 3: a disc of 32).
    page.click("button[data-tool=brush]")
    page.mouse.move(x0 + 160, y0 + 80)
    page.mouse.down()
    page.mouse.up()
    playwright.expect(echo).to_contain_text("painted=32 masked=256", timeout=15_000)
    # Ctrl+Z twice: the kernel takes back the stroke, then the rectangle, and the canvas follows.
    page.keyboard.press("Control+z")
    playwright.expect(echo).to_contain_text("painted=0 masked=224", timeout=15_000)
    page.keyboard.press("Control+z")
    playwright.expect(echo).to_have_text("rois=[] painted=0 masked=0", timeout=15_000)
    page.wait_for_function("document.querySelector('.cml-status').textContent.includes('0 ROI(s)')")
    playwright.expect(page.locator("text=Undo")).to_be_disabled(timeout=15_000)  # synced after the ROIs
    page.close()
