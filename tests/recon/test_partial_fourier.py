"""Homodyne and POCS partial Fourier reconstruction of a phantom with 5/8 of ky acquired."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.recon.coils import rss
from cloudmri_kernel.recon.fft import centered_fft, centered_ifft
from cloudmri_kernel.recon.partial_fourier import homodyne, pocs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")

MATRIX = 128
FRACTION = 5 / 8


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """Fully sampled k-space (coils, ny, nx) of a 128², 8-coil phantom with 0.2 % noise, and |truth|."""
    path = write_phantom(tmp_path_factory.mktemp("pf") / "full.h5",
                         PhantomSpec(matrix=MATRIX, coils=8, oversampling=1, noise=0.002))
    with MRDFile(path) as mrd:
        kspace = read_cartesian(mrd).kspace[0, :, 0]
        truth = np.abs(mrd.read_array("phantom")[0, 0])
    return kspace, truth


def _nrmse(image: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(image - truth) / np.linalg.norm(truth))


def _lines(side: str) -> np.ndarray:
    acquired = round(FRACTION * MATRIX)
    return np.arange(MATRIX) < acquired if side == "first" else np.arange(MATRIX) >= MATRIX - acquired


@pytest.mark.parametrize("side", ["first", "last"])
def test_homodyne_and_pocs_beat_zero_filling(phantom, side):
    kspace, truth = phantom
    lines = _lines(side)
    partial = kspace * lines[None, :, None]
    zero_filled = _nrmse(rss(centered_ifft(partial, (-2, -1))), truth)
    homodyne_error = _nrmse(rss(homodyne(partial, lines, axis=-2)), truth)
    pocs_error = _nrmse(rss(pocs(partial, lines, axis=-2, iterations=10)), truth)
    # Measured (first / last lines): zero-filled 0.207 / 0.197, homodyne 0.033 / 0.033, POCS 0.018 / 0.020;
    # fully sampled 0.018 (the noise).
    assert homodyne_error < zero_filled / 3
    assert pocs_error < zero_filled / 3
    assert pocs_error < 0.05 and homodyne_error < 0.05


def test_a_fraction_means_the_first_lines(phantom):
    kspace, _ = phantom
    partial = kspace * _lines("first")[None, :, None]
    np.testing.assert_allclose(homodyne(partial, FRACTION), homodyne(partial, _lines("first")), atol=1e-6)


def test_pocs_keeps_the_measured_samples(phantom):
    kspace, _ = phantom
    lines = _lines("last")
    partial = kspace * lines[None, :, None]
    result = centered_fft(pocs(partial, lines, iterations=5), (-2, -1))
    np.testing.assert_allclose(result[:, lines], partial[:, lines], atol=1e-5)
    assert np.abs(result[:, ~lines]).max() > 0.01  # and fills in the missing ones


def test_pocs_of_fully_sampled_data_is_the_inverse_fft(phantom):
    kspace, _ = phantom
    result = pocs(kspace, np.ones(MATRIX, bool), iterations=3)
    np.testing.assert_allclose(result, centered_ifft(kspace, (-2, -1)), atol=1e-5)


def test_partial_fourier_refuses_a_missing_centre_and_a_small_fraction(phantom):
    kspace, _ = phantom
    lines = np.arange(MATRIX) < MATRIX // 2  # stops just below the centre line
    with pytest.raises(InvalidDataError, match="centre line is not acquired"):
        homodyne(kspace * lines[None, :, None], lines)
    with pytest.raises(UsageError, match="above 0.5"):
        pocs(kspace, 0.4)
    with pytest.raises(UsageError, match="one entry per line"):
        homodyne(kspace, np.ones(MATRIX + 1, bool))


def test_torch_input_gives_torch_output(phantom):
    kspace, _ = phantom
    result = homodyne(torch.from_numpy(kspace), FRACTION)
    assert isinstance(result, torch.Tensor)
    np.testing.assert_allclose(result.numpy(), homodyne(kspace, FRACTION), atol=1e-6)


@needs_cuda
def test_partial_fourier_on_cuda_matches_the_cpu(phantom):
    kspace, _ = phantom
    lines = _lines("last")
    partial = kspace * lines[None, :, None]
    on_gpu = pocs(torch.from_numpy(partial), lines, device="cuda")
    assert on_gpu.is_cuda
    np.testing.assert_allclose(on_gpu.cpu().numpy(), pocs(partial, lines), atol=1e-4)
