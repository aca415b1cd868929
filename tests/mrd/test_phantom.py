"""The phantom simulator: its raw data must reconstruct to the ground truth it stores beside them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import finufft
import numpy as np
import pytest

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.header import schema_errors
from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.phantom import NOISE_CORRELATION, NOISE_SCANS, PhantomSpec, simulate_phantom, write_phantom
from cloudmri_kernel.mrd.reader import MRDFile, has_flag

CPP_RECON = Path("/usr/bin/ismrmrd_recon_cartesian_2d")


def _imaging(content):
    """(headers, data (n, coils, samples), traj list) of the imaging block."""
    block = content.blocks[-1]
    return block.headers, block.stacked(), block.traj


def _line_flags(spec: PhantomSpec) -> dict[str, int]:
    headers, _, _ = _imaging(simulate_phantom(spec))
    flags = headers["flags"]
    calibration_only = has_flag(flags, "IS_PARALLEL_CALIBRATION")
    both = has_flag(flags, "IS_PARALLEL_CALIBRATION_AND_IMAGING")
    return {"acquired": len(headers), "calibration_only": int(calibration_only.sum()), "both": int(both.sum()),
            "imaging": int((~calibration_only).sum())}


@pytest.mark.parametrize("oversampling", [1, 2, 3])
def test_fully_sampled_cartesian_reconstructs_the_stored_phantom(tmp_path, oversampling):
    path = write_phantom(tmp_path / "phantom.h5",
                         PhantomSpec(matrix=64, coils=4, slices=2, noise=0.0, oversampling=oversampling))
    with MRDFile(path) as mrd:
        sorted_kspace = read_cartesian(mrd)
        phantom = mrd.read_array("phantom")[0]
        csm = mrd.read_array("csm")[0]
    assert sorted_kspace.dims == ("slice", "coil", "kz", "ky", "kx")
    assert sorted_kspace.kspace.shape == (2, 4, 1, 64, 64 * oversampling)
    assert phantom.shape == (2, 64, 64) and csm.shape == (2, 4, 64, 64)
    kspace = sorted_kspace.kspace[:, :, 0]
    axes = (-2, -1)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho"), axes=axes)
    left = (64 * oversampling - 64) // 2
    combined = np.sum(np.conj(csm) * images[..., left:left + 64], axis=1)
    assert np.linalg.norm(combined - phantom) / np.linalg.norm(phantom) < 1e-4
    np.testing.assert_allclose(np.sum(np.abs(csm) ** 2, axis=1), 1.0, atol=1e-5)
    assert np.abs(phantom).max() == pytest.approx(1.0, abs=1e-6)


def test_slices_cut_the_3d_phantom_at_their_own_height():
    single = simulate_phantom(PhantomSpec(matrix=64, coils=2, noise=0.0)).arrays["phantom"]
    three = simulate_phantom(PhantomSpec(matrix=64, coils=2, slices=3, noise=0.0))
    stack = three.arrays["phantom"]
    np.testing.assert_array_equal(stack[1], single[0])
    assert not np.array_equal(np.abs(stack[0]), np.abs(stack[1]))
    assert np.abs(stack[0]).max() == pytest.approx(1.0)
    headers, _, _ = _imaging(three)
    positions = {int(s): float(z) for s, z in zip(headers["idx"]["slice"], headers["position"][:, 2], strict=True)}
    assert positions == {0: -5.0, 1: 0.0, 2: 5.0}


def test_uniform_pattern_with_embedded_calibration_has_the_expected_lines(tmp_path):
    spec = PhantomSpec(matrix=64, coils=4, accel=4, calib=16, noise=0.0)
    # every 4th line from the centre (32): 16 lines; ACS 24..39 adds 12 lines, 4 of which (24, 28, 32, 36)
    # the pattern samples as well.
    assert _line_flags(spec) == {"acquired": 28, "calibration_only": 12, "both": 4, "imaging": 16}
    path = write_phantom(tmp_path / "r4.h5", spec)
    with MRDFile(path) as mrd:
        mask = mrd.read_array("mask")[0]
        parallel = mrd.header.encoding[0].parallelImaging
        lines = mrd.acquisition_headers()["idx"]["kspace_encode_step_1"]
    assert mask.shape == (1, 64) and int(mask.sum()) == 28
    assert set(np.flatnonzero(mask[0])) == set(lines.tolist())
    assert set(range(24, 40)) <= set(lines.tolist()) and 32 in lines
    assert parallel.accelerationFactor.kspace_encoding_step_1 == 4
    assert parallel.calibrationMode.value == "embedded"


def test_fully_sampled_data_carry_no_calibration_flags():
    assert _line_flags(PhantomSpec(matrix=32, coils=2, calib=8, noise=0.0)) == {
        "acquired": 32, "calibration_only": 0, "both": 0, "imaging": 32}


def test_random_pattern_samples_matrix_over_accel_lines_including_the_centre():
    content = simulate_phantom(PhantomSpec(matrix=64, coils=2, accel=4, calib=0, pattern="random", noise=0.0))
    lines = _imaging(content)[0]["idx"]["kspace_encode_step_1"]
    assert len(lines) == 16 and len(set(lines.tolist())) == 16 and 32 in lines
    # variable density: more lines in the central half of k-space than in the outer half
    assert np.sum(np.abs(lines.astype(int) - 32) < 16) > 8


def test_poisson_pattern_keeps_a_minimum_gap_and_about_matrix_over_accel_lines():
    spec = PhantomSpec(matrix=128, coils=2, accel=4, calib=0, pattern="poisson", noise=0.0)
    lines = np.sort(_imaging(simulate_phantom(spec))[0]["idx"]["kspace_encode_step_1"].astype(int))
    assert abs(len(lines) - 32) <= 1 and 64 in lines
    gaps = np.diff(lines)
    assert gaps.min() >= 1
    # variable density: gaps near the centre are smaller than at the edge
    centre = np.abs(lines[:-1] - 64) < 16
    assert gaps[centre].mean() < gaps[~centre].mean()


def test_noise_scans_come_first_with_the_requested_level_and_correlation(tmp_path):
    sigma = 0.05
    path = write_phantom(tmp_path / "noisy.h5", PhantomSpec(matrix=64, coils=8, noise=sigma, seed=3))
    with MRDFile(path) as mrd:
        flags = mrd.acquisition_headers()["flags"]
        noise = np.concatenate(mrd.read_acquisitions(0, NOISE_SCANS).data, axis=1)
        stored_covariance = mrd.read_array("noise_covariance")[0]
    assert has_flag(flags, "IS_NOISE_MEASUREMENT").tolist() == [True] * NOISE_SCANS + [False] * 64
    assert noise.shape == (8, 2 * 256)
    covariance = noise @ noise.conj().T / noise.shape[1]
    std = np.sqrt(np.real(np.diag(covariance)))
    assert std.mean() == pytest.approx(sigma, rel=0.05)
    adjacent = np.real(np.diag(covariance, 1)) / sigma**2
    assert adjacent.mean() == pytest.approx(NOISE_CORRELATION, abs=0.05)
    np.testing.assert_allclose(np.diag(stored_covariance).real, sigma**2, rtol=1e-6)
    assert stored_covariance[0, 1].real == pytest.approx(NOISE_CORRELATION * sigma**2)


def test_imaging_noise_has_the_requested_standard_deviation():
    clean = _imaging(simulate_phantom(PhantomSpec(matrix=64, coils=4, noise=0.0)))[1]
    noisy = _imaging(simulate_phantom(PhantomSpec(matrix=64, coils=4, noise=0.02)))[1]
    difference = noisy - clean
    assert np.sqrt(np.mean(np.abs(difference) ** 2)) == pytest.approx(0.02, rel=0.03)
    assert abs(np.mean(difference)) < 1e-3


def _adjoint_recon(content, density) -> np.ndarray:
    """Density-compensated adjoint NUFFT of each coil, combined with the stored sensitivities."""
    headers, data, traj = _imaging(content)
    csm = content.arrays["csm"][0]
    m = csm.shape[-1]
    k = np.concatenate(traj)
    weights = np.concatenate([density(t) for t in traj])
    coil_images = finufft.nufft2d1(2 * np.pi * k[:, 1].astype(np.float64), 2 * np.pi * k[:, 0].astype(np.float64),
                                   (data.transpose(1, 0, 2).reshape(data.shape[1], -1) * weights).astype(np.complex128),
                                   (m, m), isign=1, eps=1e-9) / m
    return np.sum(np.conj(csm) * coil_images, axis=0)


def _radial_density(path: np.ndarray) -> np.ndarray:
    radius = np.hypot(path[:, 0], path[:, 1])
    return np.maximum(radius, 0.25 / len(path))


def _spiral_density(path: np.ndarray) -> np.ndarray:
    # A constant-density spiral: each sample covers its arc step times the (constant) spacing of the arms.
    return np.linalg.norm(np.gradient(path, axis=0), axis=1)


@pytest.mark.parametrize(("trajectory", "density"), [("radial", _radial_density), ("spiral", _spiral_density)])
def test_non_cartesian_adjoint_recovers_the_phantom(tmp_path, trajectory, density):
    spec = PhantomSpec(matrix=64, coils=4, trajectory=trajectory, noise=0.0)
    content = simulate_phantom(spec)
    headers, _, traj = _imaging(content)
    assert (headers["trajectory_dimensions"] == 2).all()
    k = np.concatenate(traj)
    assert k.min() >= -0.5 and k.max() < 0.5
    assert headers["idx"]["kspace_encode_step_1"].tolist() == list(range(len(headers)))
    image = _adjoint_recon(content, density)
    truth = np.abs(content.arrays["phantom"][0])
    assert np.corrcoef(np.abs(image).ravel(), truth.ravel())[0, 1] > 0.9

    path = write_phantom(tmp_path / f"{trajectory}.h5", spec)
    with MRDFile(path) as mrd:
        assert schema_errors(mrd.xml) == []
        encoding = mrd.header.encoding[0]
        stored = mrd.read_acquisitions()
    assert encoding.trajectory.value == trajectory
    assert (encoding.encodedSpace.matrixSize.x, encoding.encodedSpace.matrixSize.y) == (64, 64)
    assert encoding.encodingLimits.kspace_encoding_step_1.maximum == len(headers) - 1
    np.testing.assert_array_equal(np.concatenate(stored.traj), k)


def test_radial_and_spiral_readouts_scale_with_acceleration():
    def readouts(**kw):
        return len(_imaging(simulate_phantom(PhantomSpec(matrix=64, coils=1, noise=0.0, **kw)))[0])

    assert readouts(trajectory="radial") == round(64 * np.pi / 2)
    assert readouts(trajectory="radial", accel=4) == round(64 * np.pi / 8)
    assert readouts(trajectory="spiral") == 4 and readouts(trajectory="spiral", accel=2) == 2


@pytest.mark.parametrize("pattern", ["random", "poisson"])
def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path, pattern):
    spec = PhantomSpec(matrix=64, coils=2, accel=4, calib=8, pattern=pattern, noise=0.01, seed=7)
    samples = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        spec.seed = seed
        with MRDFile(write_phantom(tmp_path / f"{name}.h5", spec)) as mrd:
            samples.append((mrd.acquisition_headers()["idx"]["kspace_encode_step_1"],
                            np.concatenate(mrd.read_acquisitions().data, axis=1)))
    (lines_a, data_a), (lines_b, data_b), (lines_c, data_c) = samples
    np.testing.assert_array_equal(lines_a, lines_b)
    np.testing.assert_array_equal(data_a, data_b)
    assert not np.array_equal(lines_a, lines_c)


@pytest.mark.parametrize("change", [
    {"matrix": 8}, {"matrix": 2048}, {"matrix": 63}, {"matrix": 64.0}, {"coils": 0}, {"coils": 65},
    {"accel": 0}, {"accel": 65}, {"calib": 65}, {"calib": -1}, {"pattern": "spiral"}, {"trajectory": "epi"},
    {"noise": -0.1}, {"noise": float("nan")}, {"slices": 0}, {"oversampling": 0}, {"seed": -1},
    {"trajectory": "radial", "pattern": "random"},
])
def test_bad_specs_are_usage_errors_with_one_line_messages(tmp_path, change):
    spec = PhantomSpec(**{"matrix": 64, "coils": 2, **change})
    with pytest.raises(UsageError) as error:
        write_phantom(tmp_path / "bad.h5", spec)
    assert "\n" not in str(error.value) and "phantom" in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", [
    PhantomSpec(matrix=32, coils=8),
    PhantomSpec(matrix=32, coils=3, accel=2, calib=8, pattern="poisson", slices=2),
    PhantomSpec(matrix=32, coils=2, trajectory="spiral", noise=0.0),
], ids=["default", "poisson", "spiral"])
def test_written_header_is_schema_valid_and_describes_the_phantom(tmp_path, spec):
    path = write_phantom(tmp_path / "phantom.h5", spec)
    assert [p.name for p in tmp_path.iterdir()] == ["phantom.h5"]
    with MRDFile(path) as mrd:
        assert schema_errors(mrd.xml) == []
        header = mrd.header
        system = header.acquisitionSystemInformation
        assert (system.systemVendor, system.systemModel, system.systemFieldStrength_T) == ("CloudMRI", "phantom", 3.0)
        assert system.receiverChannels == spec.coils
        assert header.measurementInformation.protocolName.startswith(f"phantom {spec.trajectory}")
        assert header.encoding[0].encodingLimits.slice.maximum == spec.slices - 1
        assert mrd.read_array("phantom").shape == (1, spec.slices, 32, 32)
        assert mrd.read_array("csm").shape == (1, spec.slices, spec.coils, 32, 32)


@pytest.mark.skipif(not CPP_RECON.exists(),
                    reason="needs Debian's ismrmrd-tools (./workbench setup installs it; present in CI)")
def test_the_cpp_reference_recon_reads_a_cartesian_phantom(tmp_path):
    path = write_phantom(tmp_path / "phantom.h5", PhantomSpec(matrix=64, coils=8, accel=2, calib=16))
    result = subprocess.run([str(CPP_RECON), str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Number of Channels          : 8" in result.stdout
