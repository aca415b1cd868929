"""Magnitude volumes (slices, y, x) to compare, read from MRD image files or from a phantom's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloudmri_kernel.errors import InvalidDataError
from cloudmri_kernel.mrd.reader import MRDFile

IMAGE_SERIES = "images"
GROUND_TRUTH = "phantom"


def load_volume(path: str | Path, like: np.ndarray | None = None) -> np.ndarray:
    """The image series ``images`` of an MRD file, or the ``phantom`` ground truth of a simulated raw file.

    Args:
        like: a volume this one must match in shape (the reference), checked with a clear error.
    """
    with MRDFile(path) as mrd:
        names = mrd.array_names
        if IMAGE_SERIES in names:
            _, data, _ = mrd.read_images(IMAGE_SERIES)
            volume = np.abs(data).reshape(-1, *data.shape[-2:])
        elif GROUND_TRUTH in names:
            volume = np.abs(mrd.read_array(GROUND_TRUTH)[0]).reshape(-1, *mrd.read_array(GROUND_TRUTH).shape[-2:])
        else:
            raise InvalidDataError(f"has neither an image series '{IMAGE_SERIES}' (from cloudmri recon) nor a "
                                   f"ground truth '{GROUND_TRUTH}' (from cloudmri phantom)", path)
    volume = volume.astype(np.float32)
    if like is not None and volume.shape != like.shape:
        raise InvalidDataError(f"images of shape {volume.shape} cannot be compared with the reference's "
                               f"{like.shape}", path)
    return volume
