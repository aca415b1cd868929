"""PNG export: one 8-bit picture per slice, windowed like the demo's preview."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.export import export_png, save_png
from tests.export.series import NX, NY, oblique_series


def test_one_png_per_slice_with_a_common_window(tmp_path):
    s = oblique_series(stored_order=(0, 1, 2))
    paths = export_png(s.headers, s.data, tmp_path / "png")
    assert [p.name for p in paths] == ["slice_000.png", "slice_001.png", "slice_002.png"]
    top = np.percentile(s.magnitude, 99.5)
    for path, expected in zip(paths, s.magnitude, strict=True):
        with Image.open(path) as picture:
            assert picture.size == (NX, NY) and picture.mode == "L"
            pixels = np.asarray(picture)
        np.testing.assert_array_equal(pixels, (np.clip(expected / top, 0, 1) * 255).astype(np.uint8))


def test_save_png_defaults_to_the_99_5th_percentile_of_the_image(tmp_path):
    image = np.outer(np.arange(20.0), np.ones(30))
    save_png(image, tmp_path / "a.png")
    top = np.percentile(image, 99.5)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")),
                                  (np.clip(image / top, 0, 1) * 255).astype(np.uint8))
    save_png(image, tmp_path / "b.png", window=(5.0, 10.0))
    pixels = np.asarray(Image.open(tmp_path / "b.png"))
    assert pixels[:6].max() == 0 and pixels[10:].min() == 255
    save_png(np.zeros((4, 4)), tmp_path / "zero.png")  # an empty image does not divide by zero
    assert np.asarray(Image.open(tmp_path / "zero.png")).max() == 0


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    s = oblique_series()
    (tmp_path / "png").write_bytes(b"")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        export_png(s.headers, s.data, tmp_path / "png")
    assert [p.name for p in tmp_path.iterdir()] == ["png"]
