"""Label masks as the ROIs of a catalog label set: one run-length encoded mask per image and label value.

The service keeps a label set as a list of JSON ROIs (``PUT /series/{id}/labels/{name}``). A labels layer
becomes one ROI for each image and each non-zero label value in it::

    {"type": "mask", "slice": 3, "value": 1, "label": "lesion", "shape": [ny, nx],
     "runs": [[start, length], ...]}

``slice`` is the image's index in the series (the ``index`` of ``GET /series/{id}/images/{index}.png``; the
leading axes of a layer with more than three are flattened in C order, as the series file stores them), and
``runs`` the runs of the label's pixels in the image flattened row by row (C order), as in COCO's uncompressed
RLE. Runs round-trip a pixel mask exactly, which polygons traced around connected components (e.g. with
``skimage.measure.find_contours``) do not: rasterizing a contour adds or drops pixels along its edge.
``value`` is the layer's integer label and ``label`` its name in the vocabulary (``vocabulary[value - 1]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cloudmri_kernel.errors import InvalidDataError, UsageError

MASK = "mask"


def vocabulary_for(mask: np.ndarray, vocabulary: Sequence[str] = ()) -> list[str]:
    """The names of label values 1..max: ``vocabulary`` first, ``label-N`` for values it does not name."""
    highest = int(mask.max(initial=0))
    return [*vocabulary, *(f"label-{value}" for value in range(len(vocabulary) + 1, highest + 1))]


def _runs(pixels: np.ndarray) -> list[list[int]]:
    """[start, length] of each run of True in a flat boolean array."""
    edges = np.diff(np.concatenate(([0], pixels.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return np.stack([starts, stops - starts], axis=1).tolist()


def _images(mask: np.ndarray) -> np.ndarray:
    """A layer's data as (images, ny, nx)."""
    if mask.ndim < 2:
        raise UsageError(f"a labels layer needs at least two dimensions (y, x), got shape {mask.shape}")
    return mask.reshape(-1, *mask.shape[-2:])


def mask_to_rois(mask: np.ndarray, vocabulary: Sequence[str] = ()) -> list[dict]:
    """The ROIs of an integer label mask (images..., ny, nx); 0 is background.

    Args:
        vocabulary: names of label values 1, 2, …; values beyond it are named ``label-N``.
    """
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise UsageError(f"a label mask holds integers, got {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise UsageError(f"label values are 0 (background) or positive, got {int(mask.min())}")
    names = vocabulary_for(mask, vocabulary)
    images = _images(mask)
    rois = []
    for index, image in enumerate(images):
        for value in np.unique(image[image > 0]):
            rois.append({"type": MASK, "slice": index, "value": int(value), "label": names[value - 1],
                         "shape": list(image.shape), "runs": _runs((image == value).reshape(-1))})
    return rois


def rois_to_mask(rois: Sequence[dict], shape: Sequence[int], vocabulary: Sequence[str] = ()) -> np.ndarray:
    """The integer label mask of shape ``shape`` that :func:`mask_to_rois` encoded.

    ROIs of other types (polygons, rectangles or ellipses drawn in the browser) are not masks and are left out.

    Raises:
        InvalidDataError: a mask ROI that does not fit ``shape`` or names a label outside ``vocabulary``.
    """
    mask = np.zeros(shape, np.int32)
    images = _images(mask)
    for number, roi in enumerate(rois):
        if roi.get("type") != MASK:
            continue
        index, value = int(roi["slice"]), roi.get("value")
        if value is None:
            if roi.get("label") not in vocabulary:
                raise InvalidDataError(f"ROI {number} has no value and its label {roi.get('label')!r} is not in "
                                       f"the vocabulary {list(vocabulary)}")
            value = list(vocabulary).index(roi["label"]) + 1
        if not 0 <= index < len(images) or list(roi["shape"]) != list(images.shape[1:]):
            raise InvalidDataError(f"ROI {number} is a {roi['shape']} mask on image {index}, but the series has "
                                   f"{len(images)} images of {list(images.shape[1:])}")
        flat = images[index].reshape(-1)
        for start, length in roi["runs"]:
            if start < 0 or length < 1 or start + length > flat.size:
                raise InvalidDataError(f"ROI {number} has a run [{start}, {length}] outside its "
                                       f"{flat.size}-pixel image")
            flat[start:start + length] = value
    return mask
