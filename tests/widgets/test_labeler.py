"""The labeler without a browser: state as the browser sends it, rasterization, refused input, undo, and
saving/loading label sets through a real service process, whose API is checked afterwards."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import traitlets
from cloudmri_widgets import Labeler
from cloudmri_widgets.labeler import rasterize
from ipywidgets.widgets.widget import _remove_buffers

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.identity import ROLE_SCOPES, LocalTokens

VOCABULARY = {"lesion": "#e6194b", "liver": "#3cb44b"}


def _labeler(slices=2, ny=12, nx=16) -> Labeler:
    return Labeler(np.arange(slices * ny * nx, dtype=np.float32).reshape(slices, ny, nx), VOCABULARY)


def _roi(kind, points, label="lesion", slice_=0) -> dict:
    return {"slice": slice_, "label": label, "kind": kind, "points": points}


def test_image_crosses_as_float32_bytes_with_the_vocabulary():
    labeler = Labeler(np.full((3, 4, 5), -2 + 0j), ["a", "b"])
    state, paths, buffers = _remove_buffers(labeler.get_state())
    assert sorted(paths) == [["image"], ["mask"]]
    assert "image" not in state and "mask" not in state  # bytes go as binary buffers, never as JSON
    assert {path[0]: len(b) for path, b in zip(paths, buffers, strict=True)} == {"image": 3 * 4 * 5 * 4, "mask": 60}
    np.testing.assert_array_equal(np.frombuffer(labeler.image, "<f4"), 2.0)  # complex data: the magnitude
    assert labeler.shape == [3, 4, 5] and labeler.label == "a"
    assert labeler.vocabulary == [{"name": "a", "color": "#e6194b"}, {"name": "b", "color": "#3cb44b"}]
    assert not labeler.masks().any() and labeler.masks().dtype == np.uint8


def test_shapes_are_rasterized_by_pixel_centres():
    assert np.argwhere(rasterize("rectangle", [[5, 4], [2, 1]], 6, 6)).tolist() == [
        [r, c] for r in (1, 2, 3) for c in (2, 3, 4)]
    # An ellipse of radii 3 x 2 centred on (4, 3): pixel centres with ((x-4)/3)^2 + ((y-3)/2)^2 <= 1.
    ellipse = rasterize("ellipse", [[1, 1], [7, 5]], 6, 8)
    cx, cy = np.meshgrid(np.arange(8) + 0.5, np.arange(6) + 0.5)
    np.testing.assert_array_equal(ellipse, ((cx - 4) / 3) ** 2 + ((cy - 3) / 2) ** 2 <= 1)
    assert ellipse.sum(axis=1).tolist() == [0, 4, 6, 6, 4, 0]
    # A right triangle with legs of 4 pixels along the axes: the pixels whose centre has x + y < 4.
    triangle = rasterize("polygon", [[0, 0], [4, 0], [0, 4]], 5, 5)
    np.testing.assert_array_equal(triangle, (cx[:5, :5] + cy[:5, :5]) < 4)
    assert triangle.sum(axis=1).tolist() == [3, 2, 1, 0, 0]
    # A self-crossing "bow tie" is filled by the even-odd rule, like the canvas draws it.
    assert rasterize("polygon", [[0, 0], [4, 4], [4, 0], [0, 4]], 4, 4).sum() == 8
    assert not rasterize("ellipse", [[2, 2], [2, 5]], 6, 6).any()  # zero width: nothing


def test_masks_combine_painted_pixels_and_rois_in_vocabulary_order():
    labeler = _labeler()
    painted = np.zeros((2, 12, 16), np.uint8)
    painted[1, 5:7, 5:7] = 2
    painted[0, 0, 0] = 1
    # What the comm delivers after a brush stroke and two shapes: bytes as a memoryview, ROIs as JSON.
    labeler.set_state({"mask": memoryview(painted.tobytes()),
                       "rois": [_roi("rectangle", [[0, 0], [4, 2]], "liver"),
                                _roi("polygon", [[8, 2], [12, 2], [12, 6], [8, 6]], slice_=1)]})
    np.testing.assert_array_equal(labeler.painted(), painted)
    masks = labeler.masks()
    assert masks.shape == (2, 12, 16) and masks.dtype == np.uint8
    assert (masks[0, :2, :4] == 2).all() and masks[0].sum() == 16  # the rectangle covers the painted pixel
    assert (masks[1, 2:6, 8:12] == 1).all() and (masks[1, 5:7, 5:7] == 2).all()
    assert np.count_nonzero(masks) == 8 + 16 + 4


def test_a_label_drawn_outside_the_image_is_clamped_or_dropped_with_a_message():
    labeler = _labeler(ny=12, nx=16)
    labeler.rois = [_roi("rectangle", [[10, 8], [40, -5]]), _roi("ellipse", [[20, 20], [30, 30]]),
                    _roi("polygon", [[-1, -1], [3, -1], [3, 3]])]
    assert [roi["points"] for roi in labeler.rois] == [[[10, 8], [16, 0]], [[0, 0], [3, 0], [3, 3]]]
    assert "ROI(s) [1] lay outside the 16 x 12 image" in labeler.message
    assert labeler.masks()[0, :8, 10:].all()
    with pytest.raises(traitlets.TraitError, match="'tumour', which is not in the vocabulary"):
        labeler.rois = [_roi("rectangle", [[0, 0], [2, 2]], "tumour")]
    with pytest.raises(traitlets.TraitError, match="slice 2, outside 0…1"):
        labeler.rois = [_roi("rectangle", [[0, 0], [2, 2]], slice_=2)]
    with pytest.raises(traitlets.TraitError, match="at least 3 vertices"):
        labeler.rois = [_roi("polygon", [[0, 0], [2, 2]])]
    with pytest.raises(traitlets.TraitError, match="kinds are"):
        labeler.rois = [_roi("circle", [[0, 0], [2, 2]])]
    with pytest.raises(traitlets.TraitError, match="not a finite number"):
        labeler.rois = [_roi("rectangle", [[0, 0], [float("nan"), 2]])]
    with pytest.raises(traitlets.TraitError, match="holds label value 3"):
        labeler.mask = bytes([3]) * (2 * 12 * 16)
    with pytest.raises(traitlets.TraitError, match="needs 384"):
        labeler.mask = bytes(10)
    assert len(labeler.rois) == 2  # refused values change nothing


@pytest.mark.parametrize(("vocabulary", "message"), [({}, "empty"), (["a", "a"], "twice")])
def test_a_bad_vocabulary_is_refused(vocabulary, message):
    with pytest.raises(ValueError, match=message):
        Labeler(np.zeros((4, 4)), vocabulary)


def test_undo_takes_back_rois_and_strokes_in_order_and_the_browser_can_ask_for_it():
    labeler = _labeler()
    assert not labeler.can_undo and labeler.undo() is False
    first = _roi("rectangle", [[0, 0], [4, 4]])
    labeler.rois = [first]
    stroke = np.zeros((2, 12, 16), np.uint8)
    stroke[0, 6, 6] = 1
    labeler.set_state({"mask": memoryview(stroke.tobytes())})
    labeler.rois = [first, _roi("ellipse", [[6, 6], [10, 10]], "liver")]
    labeler.selected = 1
    labeler.delete(1)
    assert labeler.rois == [first] and labeler.can_undo

    labeler.undo()  # the deletion
    assert [roi["kind"] for roi in labeler.rois] == ["rectangle", "ellipse"] and labeler.selected == -1
    labeler._handle_custom_msg({"event": "undo"}, [])  # what Ctrl+Z and the Undo button send
    assert labeler.rois == [first] and labeler.painted()[0, 6, 6] == 1
    labeler.undo()  # the stroke
    assert not labeler.painted().any() and labeler.rois == [first]
    labeler.undo()
    assert labeler.rois == [] and not labeler.can_undo
    with pytest.raises(IndexError, match="no ROI 0"):
        labeler.delete(0)


# ---- saving and loading through the real service


@pytest.fixture(scope="module")
def series_id(widget_service, tmp_path_factory) -> str:
    """A reconstructed 32 x 32 series of alice's (one slice, inverse FFT)."""
    with widget_service.client("alice") as client:
        dataset = client.upload(write_phantom(tmp_path_factory.mktemp("labels") / "slice.h5",
                                              PhantomSpec(matrix=32, coils=2, accel=1, calib=8, oversampling=1,
                                                          seed=7)))["id"]
        job = client.wait(client.submit(dataset, {"method": "ifft"})["id"], timeout=120)
        return job["series_id"]


@pytest.fixture(scope="module")
def bob(widget_service):
    """A second researcher at alice's site, with a token of the service's own."""
    local = LocalTokens(widget_service.service.data_dir / "service" / "tokens.json")
    token = local.create("bob", "siteA", ROLE_SCOPES["researcher"], timedelta(hours=1))
    with Client(widget_service.service.url, token) as client:
        yield client


def _drawn(image: np.ndarray) -> Labeler:
    labeler = Labeler(image, VOCABULARY)
    painted = np.zeros(labeler.shape, np.uint8)
    painted[0, 20:24, 3:9] = 2
    painted[0, 30, 30:] = 1
    labeler.mask = painted.tobytes()
    labeler.rois = [_roi("polygon", [[2, 2], [14, 3], [9, 12]]), _roi("ellipse", [[16, 16], [28, 24]], "liver")]
    return labeler


def test_save_and_load_keep_each_readers_label_set_apart(alice, bob, widget_service, series_id):
    image = alice.images(series_id)
    drawn = _drawn(image)
    assert drawn.save(alice, series_id, "tumour-board") is True
    assert "Saved 2 ROI(s)" in drawn.message and "reader alice" in drawn.message and drawn.message_ok

    (stored,) = alice.labels(series_id, reader="alice")
    assert (stored["name"], stored["reader"], stored["vocabulary"]) == ("tumour-board", "alice", ["lesion", "liver"])
    assert stored["rois"][:2] == drawn.rois
    assert [(r["kind"], r["slice"], r["label"]) for r in stored["rois"][2:]] == [("mask", 0, "lesion"),
                                                                                  ("mask", 0, "liver")]
    assert stored["rois"][2]["runs"] == [30 * 32 + 30, 2]

    # bob draws his own set under the same name: alice's stays as it is.
    bobs = Labeler(image, VOCABULARY)
    bobs.rois = [_roi("rectangle", [[1, 1], [5, 5]], "liver")]
    assert bobs.save(bob, series_id, "tumour-board")
    sets = {(s["reader"], s["name"]): s for s in alice.labels(series_id)}
    assert sorted(sets) == [("alice", "tumour-board"), ("bob", "tumour-board")]
    assert sets[("bob", "tumour-board")]["rois"] == bobs.rois
    assert sets[("alice", "tumour-board")]["rois"] == stored["rois"]

    # Loading gives each reader their own drawing back, pixel for pixel.
    mine = Labeler(image, VOCABULARY)
    assert mine.load(alice, series_id, "tumour-board")
    assert mine.rois == drawn.rois
    np.testing.assert_array_equal(mine.masks(), drawn.masks())
    theirs = Labeler(image, VOCABULARY)
    assert theirs.load(bob, series_id, "tumour-board")
    np.testing.assert_array_equal(theirs.masks(), bobs.masks())
    assert theirs.masks().sum() == 2 * 16

    assert not Labeler(image, VOCABULARY).load(alice, series_id, "other")
    other = Labeler(image, ["kidney"])
    assert not other.load(alice, series_id, "tumour-board")
    assert "['lesion', 'liver'] that are not in this vocabulary" in other.message and other.rois == []


def test_an_expired_token_is_explained_and_the_drawing_is_kept(widget_service, series_id, alice):
    image = alice.images(series_id)
    drawn = _drawn(image)
    before = drawn.masks()
    with widget_service.client("expired") as expired:
        assert drawn.save(expired, series_id, "expired-try") is False
    assert drawn.message.startswith("Not saved: the service did not accept your token (401")
    assert not drawn.message_ok  # shown as a problem
    assert "Your drawing is kept" in drawn.message
    np.testing.assert_array_equal(drawn.masks(), before)
    assert [s["name"] for s in alice.labels(series_id) if s["name"] == "expired-try"] == []


def test_two_labelers_of_one_reader_never_overwrite_each_other_silently(alice, series_id):
    image = alice.images(series_id)
    first, second = Labeler(image, VOCABULARY), Labeler(image, VOCABULARY)
    assert not first.load(alice, series_id, "two-tabs") and not second.load(alice, series_id, "two-tabs")
    first.rois = [_roi("rectangle", [[1, 1], [5, 5]])]
    assert first.save(alice, series_id, "two-tabs") and first.versions[(series_id, "two-tabs")] == 1
    second.rois = [_roi("ellipse", [[8, 8], [12, 12]], "liver"), _roi("rectangle", [[2, 2], [6, 6]])]
    assert not second.save(alice, series_id, "two-tabs")
    assert "saved meanwhile elsewhere (1 ROI(s), version 1)" in second.message
    assert len(second.rois) == 2  # the drawing is kept
    (stored,) = [s for s in alice.labels(series_id, reader="alice") if s["name"] == "two-tabs"]
    assert stored["rois"] == first.rois
    assert second.save(alice, series_id, "two-tabs")  # pressed again: the reader chose this drawing
    (stored,) = [s for s in alice.labels(series_id, reader="alice") if s["name"] == "two-tabs"]
    assert (stored["rois"], stored["version"]) == (second.rois, 2)
    first.rois = []
    assert not first.save(alice, series_id, "two-tabs")  # now the first tab is the stale one
