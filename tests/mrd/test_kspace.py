"""Sorting acquisitions into k-space, checked on the real Siemens GRAPPA scan and the C++ reference data."""

from __future__ import annotations

import shutil

import h5py
import numpy as np

from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.recon.fft import centered_fft, centered_ifft, reconstruct_ifft
from tests.conftest import GRAPPA_FILE, cpp_recon_summary, needs_shared_data


@needs_shared_data
def test_siemens_grappa_scan_sorts_with_partial_fourier_offset():
    with MRDFile(GRAPPA_FILE) as mrd:
        k = read_cartesian(mrd)
        lines = mrd.read_acquisitions()
    assert k.dims == ("slice", "coil", "kz", "ky", "kx")
    assert k.kspace.shape == (1, 14, 1, 144, 384)
    # Lines 0..105 with the centre at 54 are shifted by 72 - 54 = 18 so the centre lands at ky = 72.
    sampled = np.flatnonzero(k.mask[0, 0])
    assert sampled.tolist() == list(range(18, 18 + 106, 3))
    calibrated = np.flatnonzero(np.abs(k.calibration[0, 0, 0]).sum(axis=-1))
    assert calibrated.tolist() == list(range(30 + 18, 78 + 18))
    assert k.noise.shape == (14, 384)
    np.testing.assert_array_equal(k.kspace[0, :, 0, 18 + 3], lines.data[2])
    np.testing.assert_array_equal(k.noise, lines.data[0])
    # Calibration-only lines must not leak into the imaging k-space.
    assert not np.abs(k.kspace[0, :, 0, 18 + 31]).any()


def test_reconstruction_matches_the_cpp_reference(cpp_phantom_full, tmp_path):
    reference = tmp_path / "reference.h5"
    shutil.copy(cpp_phantom_full, reference)
    cpp_recon_summary(reference)
    with h5py.File(reference) as f:
        cpp_image = f["dataset/cpp/data"][0, 0, 0]
    with MRDFile(cpp_phantom_full) as mrd:
        k = read_cartesian(mrd)
        ours = reconstruct_ifft(k, mrd.header)[0, 0]
    assert ours.shape == cpp_image.shape == (64, 64)
    # The C++ tool scales differently; the images must agree up to a scale factor.
    scale = np.vdot(ours, cpp_image).real / np.vdot(ours, ours).real
    assert np.linalg.norm(scale * ours - cpp_image) / np.linalg.norm(cpp_image) < 1e-4


def test_repetitions_become_an_axis(cpp_phantom):
    with MRDFile(cpp_phantom) as mrd:
        k = read_cartesian(mrd)
        full = read_cartesian(mrd, squeeze=False)
    assert k.dims == ("repetition", "slice", "coil", "kz", "ky", "kx")
    assert k.kspace.shape == (2, 1, 4, 1, 64, 128)
    assert full.kspace.shape == (2, 1, 1, 1, 1, 1, 4, 1, 64, 128)
    assert k.mask.sum() == 64  # 32 lines per repetition with R=2 interleaved
    assert k.noise.shape == (4, 128)


def test_centered_fft_pair_is_unitary():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 20)) + 1j * rng.standard_normal((3, 16, 20))
    np.testing.assert_allclose(centered_ifft(centered_fft(x, (-2, -1)), (-2, -1)), x, atol=1e-12)
    assert np.isclose(np.linalg.norm(centered_fft(x, (-2, -1))), np.linalg.norm(x))
    delta = np.zeros((8, 8))
    delta[4, 4] = 1
    np.testing.assert_allclose(centered_fft(delta, (0, 1)), np.full((8, 8), 1 / 8))
