"""Label masks as catalog ROIs: run-length encoded per image and value, decoded to the same mask."""

from __future__ import annotations

import numpy as np
import pytest
from napari_cloudmri.labels import mask_to_rois, rois_to_mask, vocabulary_for

from cloudmri_kernel.errors import InvalidDataError, UsageError


def test_a_mask_is_one_roi_per_image_and_value_with_its_runs():
    mask = np.zeros((2, 3, 4), np.uint8)
    mask[0, 0, 1:3] = 1  # flat pixels 1, 2
    mask[0, 1, 3] = mask[0, 2, 0] = 1  # 7 and 8: one run across the row boundary
    mask[1, 2, 2:] = 2  # 10, 11
    rois = mask_to_rois(mask, ["lesion"])
    assert rois == [
        {"type": "mask", "slice": 0, "value": 1, "label": "lesion", "shape": [3, 4], "runs": [[1, 2], [7, 2]]},
        {"type": "mask", "slice": 1, "value": 2, "label": "label-2", "shape": [3, 4], "runs": [[10, 2]]},
    ]
    np.testing.assert_array_equal(rois_to_mask(rois, mask.shape), mask)


def test_random_masks_round_trip_exactly():
    rng = np.random.default_rng(3)
    for shape in [(16, 16), (3, 20, 24), (2, 2, 8, 8)]:
        mask = rng.integers(0, 4, shape) * (rng.random(shape) < 0.3)
        rois = mask_to_rois(mask)
        assert {roi["value"] for roi in rois} == set(np.unique(mask[mask > 0]).tolist())
        np.testing.assert_array_equal(rois_to_mask(rois, shape), mask)


def test_an_empty_mask_has_no_rois_and_values_are_named():
    assert mask_to_rois(np.zeros((4, 4), np.int32)) == []
    assert vocabulary_for(np.array([[0, 3]]), ["lesion"]) == ["lesion", "label-2", "label-3"]


def test_rois_without_a_value_are_decoded_by_their_label_and_other_shapes_are_left_out():
    rois = [{"type": "mask", "slice": 0, "label": "artifact", "shape": [2, 2], "runs": [[0, 1]]},
            {"type": "polygon", "slice": 0, "label": "lesion", "points": [[0, 0], [1, 0], [1, 1]]}]
    np.testing.assert_array_equal(rois_to_mask(rois, (2, 2), ["lesion", "artifact"]), [[2, 0], [0, 0]])


@pytest.mark.parametrize(("roi", "message"), [
    ({"slice": 5, "value": 1, "shape": [2, 2], "runs": [[0, 1]]}, "the series has 1 images of [2, 2]"),
    ({"slice": 0, "value": 1, "shape": [3, 3], "runs": [[0, 1]]}, "is a [3, 3] mask on image 0"),
    ({"slice": 0, "value": 1, "shape": [2, 2], "runs": [[3, 2]]}, "a run [3, 2] outside its 4-pixel image"),
    ({"slice": 0, "label": "edema", "shape": [2, 2], "runs": [[0, 1]]}, "'edema' is not in the vocabulary"),
])
def test_rois_that_do_not_fit_the_series_are_refused(roi, message):
    with pytest.raises(InvalidDataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rois_to_mask([{"type": "mask", **roi}], (2, 2), ["lesion"])


def test_masks_must_be_non_negative_integers():
    with pytest.raises(UsageError, match="holds integers"):
        mask_to_rois(np.zeros((2, 2), np.float32))
    with pytest.raises(UsageError, match="0 \\(background\\) or positive, got -1"):
        mask_to_rois(np.full((2, 2), -1))
