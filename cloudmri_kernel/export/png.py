"""MRD image series to 8-bit PNG previews, one per slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cloudmri_kernel.export.dicom import combined_magnitude, prepare_directory, write_files


def save_png(image: np.ndarray, path: str | Path, window: tuple[float, float] | None = None) -> None:
    """Magnitude image (y, x) to an 8-bit PNG: ``window`` (low, high) maps to 0…255, values outside are clipped.

    The default window is 0 to the image's 99.5th percentile (1 when that is 0), which keeps a few bright
    pixels from darkening the picture. Rows of the image become rows of the PNG.
    """
    image = np.abs(np.asarray(image)) if np.iscomplexobj(image) else np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"save_png takes one 2D image, got shape {image.shape}")
    low, high = (0.0, float(np.percentile(image, 99.5)) or 1.0) if window is None else map(float, window)
    if not high > low:
        raise ValueError(f"the window's upper end must be above its lower end, got {(low, high)}")
    scaled = np.clip((image - low) / (high - low), 0, 1) * 255
    Image.fromarray(scaled.astype(np.uint8)).save(path, format="PNG")


def export_png(headers: np.ndarray, data: np.ndarray, out_dir: str | Path,
               window: tuple[float, float] | None = None) -> list[Path]:
    """One PNG per slice (``slice_000.png``, … in stored order, the planes of a 3D image in turn).

    Channels are combined by root-sum-of-squares. The default window is 0 to the 99.5th percentile of the whole
    series, so that brightness is comparable between slices. The files appear all at once or not at all.

    Returns:
        The written paths.

    Raises:
        UsageError: ``out_dir`` cannot be a directory.
    """
    slices = combined_magnitude(data, len(np.atleast_1d(headers)))
    slices = slices.reshape(-1, *slices.shape[-2:])
    if window is None:
        window = (0.0, float(np.percentile(slices, 99.5)) or 1.0)
    out_dir = prepare_directory(out_dir)
    paths = [out_dir / f"slice_{index:03d}.png" for index in range(len(slices))]
    return write_files(paths, lambda index, path: save_png(slices[index], path, window))
