"""The writer against a real service process: a labels layer of a downloaded series is stored as alice's label
set and reads back as the same mask; without a series, a token, a valid token or the series' shape, nothing is
stored and the message says why."""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari_cloudmri.labels import rois_to_mask
from napari_cloudmri.reader import get_reader
from napari_cloudmri.writer import write_labels

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import UsageError


def _labels_layer(label_service):
    """The labels layer the reader gives for the downloaded series, with two labels drawn on two images."""
    layers = get_reader(str(label_service.series_file))(str(label_service.series_file))
    (mask, kwargs, kind) = layers[1]
    assert kind == "labels"
    mask[0, 10:20, 12:18] = 1
    mask[2, 5:9, 5:9] = 2
    mask[2, 20, 20] = 1
    return mask, {"name": kwargs["name"], "metadata": {**kwargs["metadata"], "vocabulary": ["lesion", "artifact"]}}


def test_a_labels_layer_is_stored_and_reads_back_as_the_same_mask(as_alice, tmp_path):
    mask, meta = _labels_layer(as_alice)
    written = write_labels(str(tmp_path / "lesions.json"), mask, meta)
    assert written == [str(tmp_path / "lesions.json")]
    with as_alice.client() as alice:
        (stored,) = alice.labels(as_alice.series_id, reader="alice")
        images = alice.images(as_alice.series_id)
    assert (stored["name"], stored["reader"], stored["vocabulary"]) == ("lesions", "alice", ["lesion", "artifact"])
    assert [(roi["slice"], roi["value"], roi["label"]) for roi in stored["rois"]] == [
        (0, 1, "lesion"), (2, 1, "lesion"), (2, 2, "artifact")]
    np.testing.assert_array_equal(rois_to_mask(stored["rois"], images.shape, stored["vocabulary"]), mask)
    assert json.loads((tmp_path / "lesions.json").read_text())["id"] == stored["id"]

    mask[0] = 0  # saving again replaces the set
    write_labels(str(tmp_path / "lesions.json"), mask, meta)
    with as_alice.client() as alice:
        (stored,) = [s for s in alice.labels(as_alice.series_id) if s["name"] == "lesions"]
    assert [roi["slice"] for roi in stored["rois"]] == [2, 2]


def test_the_layer_name_can_name_the_series(as_alice, tmp_path):
    mask = np.zeros((3, 32, 32), np.int32)
    mask[1, 0, :4] = 3
    write_labels(str(tmp_path / "by-name.json"), mask, {"name": f"series:{as_alice.series_id} [1]", "metadata": {}})
    with as_alice.client() as alice:
        (stored,) = [s for s in alice.labels(as_alice.series_id) if s["name"] == "by-name"]
    assert stored["vocabulary"] == ["label-1", "label-2", "label-3"]
    assert stored["rois"] == [{"type": "mask", "slice": 1, "value": 3, "label": "label-3", "shape": [32, 32],
                               "runs": [[0, 4]]}]


def _stored_names(label_service) -> list[str]:
    with label_service.client() as alice:
        return sorted(s["name"] for s in alice.labels(label_service.series_id))


def test_a_layer_without_a_series_is_refused(as_alice, tmp_path):
    with pytest.raises(UsageError, match="'Labels' is not tied to a series: open the series file"):
        write_labels(str(tmp_path / "orphan.json"), np.ones((3, 32, 32), np.int32), {"name": "Labels"})
    assert "orphan" not in _stored_names(as_alice) and not (tmp_path / "orphan.json").exists()


def test_without_a_token_nothing_is_stored(label_service, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDMRI_SERVICE_URL", label_service.service.url)
    monkeypatch.delenv("CLOUDMRI_SERVICE_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDMRI_SERVICE_TOKEN_FILE", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    mask, meta = _labels_layer(label_service)
    with pytest.raises(UsageError, match="no token: set CLOUDMRI_SERVICE_TOKEN_FILE"):
        write_labels(str(tmp_path / "tokenless.json"), mask, meta)
    assert "tokenless" not in _stored_names(label_service)


def test_an_expired_token_is_refused_by_the_service(label_service, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDMRI_SERVICE_URL", label_service.service.url)
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN", label_service.tokens["expired"])
    mask, meta = _labels_layer(label_service)
    with pytest.raises(ServiceError) as refused:
        write_labels(str(tmp_path / "late.json"), mask, meta)
    assert refused.value.status == 401
    assert "late" not in _stored_names(label_service) and not (tmp_path / "late.json").exists()


def test_a_layer_of_another_shape_or_a_bad_set_name_is_refused(as_alice, tmp_path):
    meta = {"name": "x", "metadata": {"series_id": as_alice.series_id}}
    with pytest.raises(UsageError, match=r"holds 3 images of \[64, 64\] but series .* has 3 images of \[32, 32\]"):
        write_labels(str(tmp_path / "big.json"), np.ones((3, 64, 64), np.int32), meta)
    with pytest.raises(UsageError, match="may hold only letters, digits"):
        write_labels(str(tmp_path / "two words.json"), np.ones((3, 32, 32), np.int32), meta)
    assert not {"big", "two words"} & set(_stored_names(as_alice))
