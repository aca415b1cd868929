"""Coil combination, prewhitening and sensitivity maps, scored against the phantom's stored truth and sigpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.phantom import PhantomSpec, simulate_phantom, write_phantom
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.recon.coils import (
    adaptive_combine,
    espirit_maps,
    lowres_maps,
    noise_covariance,
    prewhiten,
    rss,
    whitening_matrix,
)
from cloudmri_kernel.recon.fft import centered_ifft

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")

MATRIX, COILS, CALIB = 128, 8, 24


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Fully sampled 128², 8 coils, 1 % noise: (kspace (coils, ny, nx), coil images, truth, csm, noise scans)."""
    path = write_phantom(tmp_path_factory.mktemp("coils") / "full.h5",
                         PhantomSpec(matrix=MATRIX, coils=COILS, oversampling=1, noise=0.01))
    with MRDFile(path) as mrd:
        sorted_kspace = read_cartesian(mrd)
        truth = mrd.read_array("phantom")[0, 0]
        csm = mrd.read_array("csm")[0, 0]
    kspace = sorted_kspace.kspace[0, :, 0]
    return kspace, centered_ifft(kspace, (-2, -1)), truth, csm, sorted_kspace.noise


def _inside(truth: np.ndarray) -> np.ndarray:
    return np.abs(truth) > 0.05


def _agreement(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per pixel |<a, b>| / (|a| |b|) over coils: 1 where the maps agree up to a phase."""
    inner = np.abs(np.sum(maps * np.conj(reference), axis=0))
    return inner / (np.linalg.norm(maps, axis=0) * np.linalg.norm(reference, axis=0) + 1e-30)


def _nrmse_inside(image: np.ndarray, truth: np.ndarray) -> float:
    inside = _inside(truth)
    return float(np.linalg.norm(np.abs(image)[inside] - np.abs(truth)[inside]) / np.linalg.norm(truth[inside]))


def _centre(kspace: np.ndarray, lines: int = CALIB) -> np.ndarray:
    start = kspace.shape[-2] // 2 - lines // 2
    return kspace[:, start:start + lines, :]


def test_rss_is_the_root_sum_of_squares_for_numpy_and_torch():
    values = np.array([[3.0, 1j], [4.0, 0.0]], np.complex64)
    np.testing.assert_allclose(rss(values), [5.0, 1.0])
    combined = rss(torch.from_numpy(values), axis=0)
    assert isinstance(combined, torch.Tensor)
    np.testing.assert_allclose(combined.numpy(), [5.0, 1.0])


def test_adaptive_combine_recovers_the_magnitude_and_the_coil_maps(phantom):
    _, images, truth, csm, _ = phantom
    combined, maps = adaptive_combine(images, kernel=7)
    assert combined.shape == truth.shape and maps.shape == csm.shape
    # Measured: correlation 0.9994 over the whole image, maps agree to >= 0.999 at every object pixel.
    assert np.corrcoef(np.abs(combined).ravel(), np.abs(truth).ravel())[0, 1] > 0.99
    assert _agreement(maps, csm)[_inside(truth)].min() > 0.99
    np.testing.assert_allclose(np.linalg.norm(maps, axis=0), 1.0, atol=1e-4)


def test_adaptive_combine_keeps_the_object_phase_smooth(phantom):
    """What the combination adds to the object's phase (the reference's phase) has no jumps inside the object."""
    _, images, truth, _, _ = phantom
    combined, _ = adaptive_combine(images)
    relative = combined * np.conj(truth)
    inside = _inside(truth)
    steps = np.abs(np.angle(relative[1:, :] * np.conj(relative[:-1, :])))[inside[1:, :] & inside[:-1, :]]
    assert steps.max() < 1.0  # measured 0.35 rad between neighbours; a phase singularity would give ~pi


def test_prewhitening_the_noise_scans_gives_an_identity_covariance(phantom):
    *_, noise = phantom
    covariance = noise_covariance(noise)
    whitened = prewhiten(noise, covariance, coil_axis=0)
    result = noise_covariance(whitened)
    off_diagonal = result - np.diag(np.diag(result))
    assert np.abs(off_diagonal).max() < 0.05
    np.testing.assert_allclose(np.diag(result).real, 1.0, atol=0.05)


def test_the_noise_covariance_estimate_whitens_independent_imaging_noise():
    """Noise of the imaging lines (simulated data minus the noise-free data) is drawn independently of the noise
    scans from the stored covariance: the scans' estimate must be close to it, and it must whiten that noise."""
    noisy = simulate_phantom(PhantomSpec(matrix=256, coils=COILS, noise=0.01))
    clean = simulate_phantom(PhantomSpec(matrix=256, coils=COILS, noise=0.0))
    truth = noisy.arrays["noise_covariance"]
    scans = np.concatenate(list(noisy.blocks[0].stacked()), axis=1)  # (coils, samples)
    imaging_noise = noisy.blocks[-1].stacked() - clean.blocks[-1].stacked()  # (lines, coils, samples)
    estimate = noise_covariance(scans)
    # The estimate rests on 1024 samples a coil: its relative error is about sqrt(coils / samples) = 0.09.
    assert np.linalg.norm(estimate - truth) / np.linalg.norm(truth) < 0.2
    whitened = prewhiten(imaging_noise, estimate, coil_axis=1)
    np.testing.assert_allclose(noise_covariance(np.moveaxis(whitened, 1, 0)), np.eye(COILS), atol=0.2)
    exact = prewhiten(imaging_noise, truth, coil_axis=1)
    np.testing.assert_allclose(noise_covariance(np.moveaxis(exact, 1, 0)), np.eye(COILS), atol=0.05)


def test_whitening_matrix_is_the_inverse_cholesky_factor():
    rng = np.random.default_rng(1)
    mixing = rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4))
    covariance = mixing @ mixing.conj().T + 0.1 * np.eye(4)
    matrix = whitening_matrix(covariance)
    np.testing.assert_allclose(matrix @ covariance @ matrix.conj().T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(np.triu(matrix, 1), 0.0)


def test_whitening_refuses_a_singular_covariance_and_a_wrong_coil_axis():
    with pytest.raises(InvalidDataError, match="not positive definite"):
        whitening_matrix(np.diag([1.0, 0.0, 1.0]).astype(np.complex64))
    with pytest.raises(UsageError, match="coil_axis"):
        prewhiten(np.zeros((5, 3), np.complex64), np.eye(3), coil_axis=0)
    with pytest.raises(InvalidDataError, match="swapped"):
        noise_covariance(np.zeros((8, 4), np.complex64))


def test_espirit_agrees_with_sigpy_on_the_same_calibration(phantom):
    from sigpy.mri.app import EspiritCalib

    kspace, _, truth, _, _ = phantom
    ours = espirit_maps(_centre(kspace), (MATRIX, MATRIX))
    theirs = EspiritCalib(kspace, calib_width=CALIB, thresh=0.02, kernel_width=6, crop=0.95,
                          show_pbar=False).run()
    # Measured: agreement >= 0.99999 at every object pixel; the crop masks differ at no pixel.
    assert _agreement(ours, theirs)[_inside(truth)].min() > 0.99
    assert np.mean((np.abs(ours).sum(0) > 0) != (np.abs(theirs).sum(0) > 0)) < 0.01


def test_espirit_maps_are_the_coil_sensitivities_and_serve_sense(phantom):
    kspace, images, truth, csm, _ = phantom
    maps = espirit_maps(_centre(kspace), (MATRIX, MATRIX))
    assert maps.shape == csm.shape
    assert _agreement(maps, csm)[_inside(truth)].min() > 0.99
    combined = np.sum(np.conj(maps) * images, axis=0)
    assert _nrmse_inside(combined, truth) < 0.05  # measured 0.022 (1 % noise)


def test_lowres_maps_serve_sense_with_a_looser_bar(phantom):
    kspace, images, truth, csm, _ = phantom
    maps = lowres_maps(_centre(kspace), (MATRIX, MATRIX))
    assert _agreement(maps, csm)[_inside(truth)].min() > 0.98
    combined = np.sum(np.conj(maps) * images, axis=0)
    assert _nrmse_inside(combined, truth) < 0.1  # measured 0.022
    assert np.abs(maps[:, 0, 0]).max() == 0.0  # the corner is background: masked


def test_espirit_refuses_a_calibration_smaller_than_its_kernel():
    with pytest.raises(InvalidDataError, match="smaller than the ESPIRiT kernel"):
        espirit_maps(np.ones((2, 4, 32), np.complex64), (32, 32))


@needs_cuda
def test_maps_and_combination_on_cuda_match_the_cpu(phantom):
    kspace, images, truth, _, _ = phantom
    on_gpu = espirit_maps(torch.from_numpy(_centre(kspace)), (MATRIX, MATRIX), device="cuda")
    assert on_gpu.is_cuda
    on_cpu = espirit_maps(_centre(kspace), (MATRIX, MATRIX))
    assert _agreement(on_gpu.cpu().numpy(), on_cpu)[_inside(truth)].min() > 0.999
    combined, _ = adaptive_combine(torch.from_numpy(images), device="cuda")
    np.testing.assert_allclose(np.abs(combined.cpu().numpy()), np.abs(adaptive_combine(images)[0]), rtol=1e-3,
                               atol=1e-4)
