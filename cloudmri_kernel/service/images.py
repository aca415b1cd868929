"""Images for viewers: decrypted image series kept in a small in-memory cache, served as PNG or arrays."""

from __future__ import annotations

import io
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from cloudmri_kernel.errors import UsageError


class ImageCache:
    """Least-recently-used magnitude volumes (n, y, x) float32 by store address, bounded in bytes."""

    def __init__(self, max_bytes: int = 512 << 20):
        self.max_bytes = max_bytes
        self._volumes: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def volume(self, store, site: str, sha256: str, work_dir: Path) -> np.ndarray:
        key = (site, sha256)
        with self._lock:
            if key in self._volumes:
                self._volumes.move_to_end(key)
                return self._volumes[key]
        volume = _read_volume(store, site, sha256, work_dir)
        with self._lock:
            self._volumes[key] = volume
            while sum(v.nbytes for v in self._volumes.values()) > self.max_bytes and len(self._volumes) > 1:
                self._volumes.popitem(last=False)
        return volume


def _read_volume(store, site: str, sha256: str, work_dir: Path) -> np.ndarray:
    from cloudmri_kernel.export.dicom import combined_magnitude
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.recon.output import SERIES

    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        path = store.get_file(site, sha256, Path(scratch) / "images.h5")
        with MRDFile(path) as mrd:
            headers, data, _ = mrd.read_images(SERIES)
    magnitude = combined_magnitude(data, len(headers))
    return magnitude.reshape(-1, *magnitude.shape[-2:]).astype(np.float32)


def select_image(volume: np.ndarray, index: int) -> np.ndarray:
    if not 0 <= index < len(volume):
        raise UsageError(f"image index {index} is out of range: the series has {len(volume)} images (0-"
                         f"{len(volume) - 1})")
    return volume[index]


def png_bytes(image: np.ndarray, window: tuple[float, float] | None) -> bytes:
    """An 8-bit PNG; the default window is 0 to the image's 99.5th percentile."""
    from cloudmri_kernel.export.png import save_png

    buffer = io.BytesIO()
    try:
        save_png(image, buffer, window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
