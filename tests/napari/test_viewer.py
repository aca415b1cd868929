"""napari itself, under xvfb-run: a viewer opens a raw file and a downloaded series with the plugin, and a labels
layer painted in the viewer is saved to the catalog with the plugin's writer.

These run where napari (the dev extra) and Debian's xvfb are installed, as in CI; elsewhere they are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from napari_cloudmri.labels import rois_to_mask

from tests.napari.conftest import MANIFEST, PHANTOM, plugin_entry_point, with_extensions_path

SESSION = Path(__file__).with_name("napari_session.py")

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("napari") is None,
                       reason="napari is in the dev extra: pip install -e '.[dev]'"),
    pytest.mark.skipif(shutil.which("xvfb-run") is None,
                       reason="needs Debian's xvfb for a headless display (./workbench setup installs it)"),
]


def _napari(*args: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(["xvfb-run", "-a", sys.executable, str(SESSION), str(MANIFEST), *args],
                            capture_output=True, text=True, timeout=300,
                            env=with_extensions_path(env or dict(os.environ)))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_napari_opens_a_raw_file_as_its_reconstruction(raw_file):
    seen = _napari(str(raw_file))
    assert seen["discovered"] == (plugin_entry_point() is not None)  # else napari_session.py registers it
    assert seen["layers"] == [{"name": "phantom (grappa)", "type": "image", "shape": [PHANTOM.slices, 32, 32],
                               "scale": [5.0, 8.0, 8.0], "series_id": None}]


def test_labels_painted_in_napari_are_saved_to_the_catalog(label_service, tmp_path):
    env = {**label_service.service.client_env(label_service.tokens["alice"], tmp_path / "client")}
    seen = _napari(str(label_service.series_file), str(tmp_path / "napari.json"), env=env)
    series = label_service.series_id
    assert [(layer["name"], layer["type"], layer["series_id"]) for layer in seen["layers"]] == [
        (f"series:{series}", "image", series), (f"series:{series} labels", "labels", series)]
    assert seen["saved"] == [str(tmp_path / "napari.json")]
    with label_service.client() as alice:
        (stored,) = [s for s in alice.labels(series) if s["name"] == "napari"]
    expected = np.zeros((3, 32, 32), np.int32)
    expected[1, 8:16, 8:24] = 1
    np.testing.assert_array_equal(rois_to_mask(stored["rois"], expected.shape, stored["vocabulary"]), expected)
