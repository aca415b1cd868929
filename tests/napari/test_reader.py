"""The reader: a raw phantom opens as its default reconstruction with the header's geometry, an image file as its
series (with a labels layer when it came from the service), and files that are not MRD are declined."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from napari_cloudmri.reader import get_reader, read_images, read_raw

from cloudmri_kernel.errors import InvalidDataError
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.recon.engine import reconstruct_file
from cloudmri_kernel.recon.output import write_recon
from tests.napari.conftest import PHANTOM

SERIES_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def reconstruction(raw_file):
    return reconstruct_file(raw_file)


@pytest.fixture(scope="module")
def image_file(reconstruction, raw_file, tmp_path_factory):
    return write_recon(reconstruction, tmp_path_factory.mktemp("images") / "recon.h5", raw_file)


def test_a_raw_file_opens_as_its_default_reconstruction(raw_file, reconstruction):
    assert get_reader(str(raw_file)) is read_raw
    (layer,) = get_reader(str(raw_file))(str(raw_file))
    data, kwargs, kind = layer
    assert kind == "image" and data.shape == (PHANTOM.slices, 32, 32) and data.dtype == np.float32
    np.testing.assert_array_equal(data, reconstruction.images[:, 0])  # the z axis of length one is left out
    # Recon FOV 256 mm over 32 pixels in-plane; the phantom's slices lie 5 mm apart.
    assert kwargs["scale"] == [5.0, 8.0, 8.0] and kwargs["axis_labels"] == ["slice", "y", "x"]
    assert kwargs["name"] == "phantom (grappa)" and kwargs["metadata"]["recipe"]["method"] == "grappa"
    with MRDFile(raw_file) as mrd:
        truth = np.abs(mrd.read_array("phantom"))[0]
    for image, expected in zip(data, truth, strict=True):
        assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.95


def test_an_image_file_opens_as_its_series(image_file, reconstruction):
    assert get_reader(str(image_file)) is read_images
    (layer,) = read_images(image_file)
    data, kwargs, kind = layer
    assert kind == "image"
    np.testing.assert_allclose(data, reconstruction.images[:, 0], rtol=1e-6)
    assert kwargs["scale"] == [5.0, 8.0, 8.0] and kwargs["axis_labels"] == ["image", "y", "x"]
    assert kwargs["name"] == "recon" and "series_id" not in kwargs["metadata"]
    assert kwargs["metadata"]["provenance"]["recipe"]["method"] == "grappa"


def test_a_series_file_from_the_service_comes_with_a_labels_layer_for_its_series(image_file, tmp_path):
    downloaded = shutil.copy(image_file, tmp_path / f"{SERIES_ID}.h5")
    (image, image_kwargs, image_kind), (labels, labels_kwargs, labels_kind) = read_images(downloaded)
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image_kwargs["name"] == f"series:{SERIES_ID}" and image_kwargs["metadata"]["series_id"] == SERIES_ID
    assert labels.shape == image.shape and not labels.any() and labels.dtype == np.int32
    assert labels_kwargs["metadata"] == {"series_id": SERIES_ID}
    assert labels_kwargs["scale"] == image_kwargs["scale"]


def test_one_image_is_a_2d_layer(raw_file, tmp_path):
    single = reconstruct_file(raw_file)
    single.images, single.acquisition_headers = single.images[1:2], single.acquisition_headers[1:2]
    (data, kwargs, _), = read_images(write_recon(single, tmp_path / "one.h5", raw_file))
    assert data.shape == (32, 32) and kwargs["scale"] == [8.0, 8.0] and kwargs["axis_labels"] == ["y", "x"]


def test_files_that_are_not_mrd_are_declined(tmp_path, raw_file):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["kspace"] = np.zeros((4, 4), np.complex64)
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5 at all\n")
    empty_mrd = tmp_path / "header_only.h5"
    with h5py.File(empty_mrd, "w") as handle:  # an MRD header with neither acquisitions nor images
        with MRDFile(raw_file) as mrd:
            handle.create_dataset("dataset/xml", data=[mrd.xml], dtype=h5py.string_dtype())
    for path in (other, text, empty_mrd, tmp_path, tmp_path / "missing.h5"):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(raw_file), str(raw_file)]) is None  # napari asks per file unless stacking


def test_an_invalid_raw_file_is_refused_with_the_validation_findings(raw_file, tmp_path):
    broken = shutil.copy(raw_file, tmp_path / "broken.h5")
    with h5py.File(broken, "r+") as handle:
        xml = handle["dataset/xml"][0].decode()
        del handle["dataset/xml"]
        handle.create_dataset("dataset/xml", data=[xml.replace("<receiverChannels>4<", "<receiverChannels>8<")],
                              dtype=h5py.string_dtype())
    reader = get_reader(str(broken))
    assert reader is read_raw
    with pytest.raises(InvalidDataError, match="is not valid MRD raw data.*receiverChannels=8"):
        reader(str(broken))

