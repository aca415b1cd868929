"""`ingest`: every supported format in, valid MRD out; bad input is refused and leaves no file behind."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.ingest import detect_format, ingest
from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.validate import validate_file
from tests.conftest import GRAPPA_FILE, cpp_recon_summary, needs_shared_data


def random_kspace(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_numpy_with_yaml_sidecar(tmp_path):
    kspace = random_kspace((2, 4, 32, 64))  # slices, coils, ky, kx (2x oversampled)
    np.save(tmp_path / "scan.npy", kspace)
    (tmp_path / "scan.yaml").write_text("fov_mm: [200, 200, 4]\noversampling: 2\nfield_strength_t: 1.5\n"
                                        "vendor: ACME\ntr_ms: 7.5\n")
    result = ingest(tmp_path / "scan.npy", tmp_path / "scan.h5")
    assert (result.source_format, result.acquisitions) == ("numpy", 64)
    with MRDFile(tmp_path / "scan.h5") as mrd:
        enc = mrd.header.encoding[0]
        assert (enc.encodedSpace.matrixSize.x, enc.reconSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == \
            (64, 32, 32)
        assert enc.encodedSpace.fieldOfView_mm.x == 400 and enc.reconSpace.fieldOfView_mm.x == 200
        assert mrd.header.acquisitionSystemInformation.systemFieldStrength_T == 1.5
        assert mrd.header.sequenceParameters.TR == [7.5]
        sorted_k = read_cartesian(mrd)
        heads = mrd.acquisition_headers()
    np.testing.assert_array_equal(sorted_k.kspace[:, :, 0], kspace)
    np.testing.assert_allclose(np.unique(heads["position"][:, 2]), [-2, 2])
    assert cpp_recon_summary(tmp_path / "scan.h5")["Number of acquisitions"] == "64"


def test_numpy_npz_with_mask_and_json_sidecar(tmp_path):
    kspace = random_kspace((4, 1, 24, 40))  # coils, kz, ky, kx -> needs the 5-axis form
    mask = np.zeros(24, bool)
    mask[::3] = True
    mask[10:14] = True
    np.savez(tmp_path / "u.npz", kspace=kspace[np.newaxis], mask=mask)
    (tmp_path / "u.json").write_text(json.dumps({"fov_mm": [220, 220, 3], "acceleration": [3, 1],
                                                 "calibration_lines": 4}))
    ingest(tmp_path / "u.npz", tmp_path / "u.h5")
    with MRDFile(tmp_path / "u.h5") as mrd:
        k = read_cartesian(mrd)
        assert mrd.header.encoding[0].parallelImaging.calibrationMode.value == "embedded"
    assert np.flatnonzero(k.mask[0, 0]).tolist() == sorted(set(range(0, 24, 3)) | set(range(10, 14)))
    assert np.flatnonzero(np.abs(k.calibration[0, 0, 0]).sum(-1)).tolist() == [10, 11, 12, 13]


def test_numpy_radial_with_trajectory(tmp_path):
    spokes, samples = 16, 64
    angles = np.pi * np.arange(spokes) / spokes
    radius = (np.arange(samples) - samples / 2) / samples
    trajectory = np.stack([np.outer(np.cos(angles), radius), np.outer(np.sin(angles), radius)], -1)
    np.savez(tmp_path / "r.npz", kspace=random_kspace((3, spokes, samples)), trajectory=trajectory)
    (tmp_path / "r.yaml").write_text("fov_mm: [200, 200, 5]\ntrajectory: radial\noversampling: 2\n")
    ingest(tmp_path / "r.npz", tmp_path / "r.h5")
    with MRDFile(tmp_path / "r.h5") as mrd:
        block = mrd.read_acquisitions()
        assert mrd.header.encoding[0].trajectory.value == "radial"
        assert mrd.header.encoding[0].encodedSpace.matrixSize.x == 32
    assert len(block) == spokes and block.traj[5].shape == (samples, 2)
    np.testing.assert_allclose(block.traj[5], trajectory[5], rtol=1e-6)


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 8, 8), np.float32), "k-space must be complex"),
    (np.zeros((8, 8), np.complex64), "must have 3 to 5 axes"),
    (np.zeros((1, 1, 1, 2, 8, 8), np.complex64), "must have 3 to 5 axes"),
])
def test_numpy_with_wrong_dtype_or_rank(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    (tmp_path / "bad.yaml").write_text("fov_mm: [200, 200, 5]\n")
    with pytest.raises(InvalidDataError, match=message):
        ingest(tmp_path / "bad.npy", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("sidecar, message", [
    (None, "needs a geometry sidecar"),
    ("fov: [1, 2, 3]\n", "fov_mm: Field required; fov: Extra inputs are not permitted"),
    ("fov_mm: [200, 200]\n", "fov_mm"),
])
def test_numpy_sidecar_problems(tmp_path, sidecar, message):
    np.save(tmp_path / "k.npy", random_kspace((2, 8, 16)))
    if sidecar is not None:
        (tmp_path / "k.yaml").write_text(sidecar)
    with pytest.raises(UsageError, match=message):
        ingest(tmp_path / "k.npy", tmp_path / "out.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["k.npy"] + (["k.yaml"] if sidecar else []))


def test_fastmri_file(cpp_phantom_full, tmp_path):
    with MRDFile(cpp_phantom_full) as mrd:
        k = read_cartesian(mrd).kspace  # (1, 4, 1, 64, 128)
        xml = mrd.xml
    fastmri = np.repeat(k[:, :, 0].transpose(0, 1, 3, 2), 3, axis=0)  # (slices=3, coils, readout, phase)
    fastmri[:, :, :, :4] = 0  # zero-padded edge columns are not acquisitions
    mask = np.ones(64, bool)
    mask[1::2] = False
    with h5py.File(tmp_path / "file1000001.h5", "w") as f:
        f["kspace"] = fastmri
        f["ismrmrd_header"] = xml
        f["mask"] = mask
    result = ingest(tmp_path / "file1000001.h5", tmp_path / "out.h5")
    assert result.source_format == "fastmri"
    assert result.acquisitions == 3 * 30  # even columns 4..62 in each of 3 slices
    with MRDFile(tmp_path / "out.h5") as mrd:
        back = read_cartesian(mrd)
    assert back.kspace.shape == (3, 4, 1, 64, 128)
    np.testing.assert_array_equal(back.kspace[2, :, 0, 6], k[0, :, 0, 6])
    assert not back.mask[:, 0, 7].any()


def test_mrd_input_is_revalidated_and_anonymized(tmp_path, cpp_phantom):
    result = ingest(cpp_phantom, tmp_path / "out.h5", anonymize=True, site="north")
    assert result.anonymization.actions == {"institutionName": "remove"}
    with MRDFile(tmp_path / "out.h5") as mrd:
        params = {p.name: p.value for p in mrd.header.userParameters.userParameterString}
        assert params == {"cloudmri.site": "north", "cloudmri.source_format": "mrd"}
        assert mrd.header.acquisitionSystemInformation.institutionName is None
    assert validate_file(tmp_path / "out.h5") == []


@needs_shared_data
def test_real_grappa_scan_ingests_with_anonymization(tmp_path):
    result = ingest(GRAPPA_FILE, tmp_path / "grappa.h5", anonymize=True, site="nih")
    assert result.acquisitions == 69
    text = MRDFile(tmp_path / "grappa.h5").xml.decode()
    assert "45387" not in text and "NIH" not in text
    assert cpp_recon_summary(tmp_path / "grappa.h5")["Number of Channels"] == "14"


def test_invalid_mrd_input_is_refused(tmp_path, cpp_phantom):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(cpp_phantom.read_bytes())
    with h5py.File(broken, "r+") as f:
        record = f["dataset/data"][4]
        record["head"]["idx"]["kspace_encode_step_1"] = 500
        f["dataset/data"][4] = record
    with pytest.raises(InvalidDataError, match="is not valid MRD: counter 'kspace_encode_step_1'"):
        ingest(broken, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_paths_and_formats_that_cannot_be_ingested(tmp_path, cpp_phantom):
    with pytest.raises(UsageError, match="no such file"):
        ingest(tmp_path / "nothing.dat", tmp_path / "o.h5")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="unknown raw-data format"):
        detect_format(tmp_path / "notes.txt")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(cpp_phantom.read_bytes()[:4000])
    with pytest.raises(InvalidDataError, match="truncated or damaged HDF5"):
        ingest(cut, tmp_path / "o.h5")
    with pytest.raises(UsageError, match="originals are never modified"):
        ingest(cpp_phantom, cpp_phantom)
    with pytest.raises(UsageError, match="output's directory does not exist"):
        ingest(cpp_phantom, tmp_path / "missing" / "o.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.h5", "notes.txt"]
