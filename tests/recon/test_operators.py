"""Forward-model operators: exact adjoints, the FFT and NUFFT conventions of the phantom simulator, orthonormal
wavelets and density compensation."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.phantom import PhantomSpec, simulate_phantom, write_phantom
from cloudmri_kernel.recon.fft import centered_fft, centered_ifft, crop_center
from cloudmri_kernel.recon.operators import (
    FFT,
    NUFFT,
    CoilSensitivity,
    Compose,
    FiniteDifference,
    Identity,
    Linop,
    Mask,
    Multiply,
    SenseOperator,
    Wavelet,
    pipe_menon_dcf,
    remove_readout_oversampling,
)
from tests.recon.phantoms import non_cartesian_slice


def _random(shape, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=torch.complex64, generator=generator)


def _relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def assert_adjoint(op: Linop, rtol: float = 1e-5) -> None:
    """<A x, y> == <x, A^H y> for random x, y (inner products summed in float64)."""
    x, y = _random(op.ishape, 1), _random(op.oshape, 2)
    ax, ahy = op(x), op.H(y)
    assert tuple(ax.shape) == op.oshape and tuple(ahy.shape) == op.ishape
    assert ax.dtype == torch.complex64 and ahy.dtype == torch.complex64
    lhs = np.vdot(y.numpy().astype(np.complex128), ax.numpy().astype(np.complex128))
    rhs = np.vdot(ahy.numpy().astype(np.complex128), x.numpy().astype(np.complex128))
    assert abs(lhs - rhs) <= rtol * abs(lhs), (op, lhs, rhs)


MAPS = _random((4, 24, 20), 3)
MASK_1D = (torch.arange(24) % 3 == 0).reshape(24, 1)
MASK_2D = torch.rand(24, 20, generator=torch.Generator().manual_seed(4)) > 0.6
TRAJ = np.random.default_rng(5).uniform(-0.5, 0.5, (300, 2))


@pytest.mark.parametrize("make", [
    lambda: FFT((4, 24, 20)),
    lambda: FFT((3, 15, 9), axes=(-1,)),
    lambda: Mask(MASK_2D, (4, 24, 20)),
    lambda: Multiply(_random((24, 20), 6), (4, 24, 20)),
    lambda: CoilSensitivity(MAPS),
    lambda: SenseOperator(MAPS, MASK_1D),
    lambda: SenseOperator(MAPS, MASK_2D),
    lambda: SenseOperator(MAPS, MASK_1D).normal(),
    lambda: SenseOperator(MAPS[:, :15, :9], MASK_2D[:15, :9]).normal(),
    lambda: NUFFT(TRAJ, (24, 20)),
    lambda: NUFFT(TRAJ, (4, 24, 20), dcf=np.linspace(0.1, 2.0, 300)),
    lambda: NUFFT(TRAJ, (4, 24, 20)).normal(),
    lambda: NUFFT(TRAJ, (4, 24, 20)) * CoilSensitivity(MAPS),
    lambda: (NUFFT(TRAJ, (4, 24, 20)) * CoilSensitivity(MAPS)).normal(),
    lambda: Wavelet((32, 48), "db4", level=2),
    lambda: Wavelet((2, 64, 64)),
    lambda: FiniteDifference((24, 20)),
    lambda: FiniteDifference((4, 24, 20), axes=(0, 2)),
    lambda: CoilSensitivity(MAPS).H * FFT((4, 24, 20)).H,
    lambda: Identity((5, 6)),
], ids=["fft", "fft-1d-odd", "mask", "multiply", "coils", "sense-1d", "sense-2d", "sense-normal",
        "sense-normal-odd", "nufft", "nufft-dcf", "toeplitz", "nufft-sense", "nufft-sense-normal",
        "wavelet", "wavelet-batch", "finite-difference", "finite-difference-axes", "adjoint-chain", "identity"])
def test_every_operator_has_an_exact_adjoint(make):
    assert_adjoint(make())


def test_composition_applies_right_to_left_and_checks_shapes():
    coils, fft = CoilSensitivity(MAPS), FFT((4, 24, 20))
    x = _random((24, 20))
    composed = fft * coils
    assert isinstance(composed, Compose) and composed.ishape == (24, 20) and composed.oshape == (4, 24, 20)
    torch.testing.assert_close(composed(x), fft(coils(x)))
    assert (fft * composed).ops[0] is fft and len((fft * composed).ops) == 3
    assert coils.H.H is coils
    with pytest.raises(ValueError, match="cannot compose"):
        coils * fft
    with pytest.raises(ValueError, match=r"expects input of shape \(24, 20\)"):
        coils(_random((20, 24)))


def test_fft_matches_the_numpy_centered_fft():
    for shape in [(3, 16, 12), (2, 15, 9)]:
        x = _random(shape)
        np.testing.assert_allclose(FFT(shape)(x).numpy(), centered_fft(x.numpy(), (-2, -1)), rtol=0, atol=2e-5)
        np.testing.assert_allclose(FFT(shape).H(x).numpy(), centered_ifft(x.numpy(), (-2, -1)), rtol=0, atol=2e-5)


@pytest.mark.parametrize("mask", [MASK_1D, MASK_2D, torch.ones(24, 20, dtype=torch.bool)], ids=["1d", "2d", "full"])
def test_fused_sense_normal_equals_the_composition(mask):
    sense = SenseOperator(MAPS, mask)
    x = _random((24, 20), 7)
    composed = Compose([sense.ops[2].H, sense.ops[1].H, sense.ops[0].normal(), sense.ops[1], sense.ops[2]])
    assert _relative(sense.normal()(x), composed(x)) < 1e-5
    assert _relative(sense.H(sense(x)), composed(x)) < 1e-5


def test_sense_detects_a_mask_constant_along_the_readout():
    assert SenseOperator(MAPS, MASK_1D.expand(24, 20)).mask.shape == (24, 1)
    assert SenseOperator(MAPS, MASK_2D).mask.shape == (24, 20)


def test_wavelet_is_orthonormal():
    for shape, wavelet, level in [((64, 64), "db4", None), ((48, 32), "haar", None), ((128, 96), "sym8", None),
                                  ((64, 64), "db4", 6)]:
        op = Wavelet(shape, wavelet, level)
        x = _random(shape, 8)
        coefficients = op(x)
        assert coefficients.shape == x.shape
        assert float(coefficients.norm() / x.norm()) == pytest.approx(1.0, abs=1e-5)
        assert _relative(op.H(coefficients), x) < 1e-5
        assert _relative(op(op.H(x)), x) < 1e-5


@pytest.mark.parametrize(("shape", "wavelet"), [((64, 64), "db4"), ((96, 128), "sym8"), ((32, 48), "haar")])
def test_wavelet_coefficients_are_pywts_periodization(shape, wavelet):
    image = _random(shape, 9).numpy()
    op = Wavelet(shape, wavelet)
    expected = [pywt.coeffs_to_array(pywt.wavedec2(part, wavelet, mode="periodization", level=op.level))[0]
                for part in (image.real, image.imag)]
    np.testing.assert_allclose(op(torch.as_tensor(image)).numpy(), expected[0] + 1j * expected[1], atol=1e-5)


def test_wavelet_keeps_smooth_and_periodic_content_in_the_approximation():
    y, x = np.mgrid[:64, :64] * 2 * np.pi / 64
    image = torch.as_tensor((1 + 0.5 * np.cos(x) + 0.3 * np.sin(y)).astype(np.complex64))
    op = Wavelet((64, 64), "db4")
    assert op.level == 3
    coefficients = op(image)
    # db4 has 4 vanishing moments and the boundaries are periodic: no detail coefficient sees an edge, and
    # a sinusoid one period across is locally near a cubic (measured leak 9e-6 of the energy).
    assert float(coefficients[:8, :8].norm() ** 2 / coefficients.norm() ** 2) > 1 - 1e-4
    constant = op(torch.ones(64, 64, dtype=torch.complex64))
    assert float(constant[:8, :8].norm() ** 2 / constant.norm() ** 2) > 1 - 1e-10


def test_wavelet_rejects_levels_and_wavelets_that_do_not_fit():
    with pytest.raises(UsageError, match="use 1 to 4"):
        Wavelet((48, 64), "db4", level=5)
    with pytest.raises(UsageError, match="not an orthogonal"):
        Wavelet((64, 64), "bior2.2")
    with pytest.raises(UsageError, match="needs even image sizes, not 63 x 64"):
        Wavelet((63, 64))


def test_finite_difference_is_the_circular_forward_difference():
    x = _random((6, 5))
    d = FiniteDifference((6, 5))(x)
    torch.testing.assert_close(d[0, 2, 3], x[3, 3] - x[2, 3])
    torch.testing.assert_close(d[1, 2, 4], x[2, 0] - x[2, 4])


def _direct_dft(image: np.ndarray, traj: np.ndarray) -> np.ndarray:
    """The phantom simulator's convention, written out: a unitary DFT with the image centre at N//2."""
    ny, nx = image.shape
    y = np.arange(ny) - ny // 2
    x = np.arange(nx) - nx // 2
    phase = traj[:, 0, None, None] * x[None, None, :] + traj[:, 1, None, None] * y[None, :, None]
    return (np.exp(-2j * np.pi * phase) * image).sum(axis=(1, 2)) / np.sqrt(ny * nx)


def test_nufft_matches_a_direct_dft():
    image = _random((16, 16), 9)
    traj = np.random.default_rng(10).uniform(-0.5, 0.5, (200, 2))
    assert _relative(NUFFT(traj, (16, 16))(image), _direct_dft(image.numpy(), traj)) < 1e-3
    y = _random(200, 11)
    direct_adjoint = np.conj(np.stack([_direct_dft(e, traj) for e in np.eye(256).reshape(256, 16, 16)])) @ y.numpy()
    assert _relative(NUFFT(traj, (16, 16)).H(y).flatten(), direct_adjoint) < 1e-3


def test_nufft_on_the_cartesian_grid_is_the_centered_fft():
    ny, nx = 12, 16
    ky, kx = np.meshgrid((np.arange(ny) - ny // 2) / ny, (np.arange(nx) - nx // 2) / nx, indexing="ij")
    traj = np.stack([kx.ravel(), ky.ravel()], axis=1)
    image = _random((ny, nx), 12)
    assert _relative(NUFFT(traj, (ny, nx))(image), centered_fft(image.numpy(), (-2, -1)).ravel()) < 1e-3


def test_nufft_reproduces_the_phantom_simulators_radial_samples(tmp_path):
    path = write_phantom(tmp_path / "radial.h5", PhantomSpec(matrix=64, coils=4, trajectory="radial", noise=0.0))
    samples, traj, phantom, csm = non_cartesian_slice(path)
    predicted = NUFFT(traj, csm.shape)(torch.as_tensor(csm * phantom))
    assert _relative(predicted, samples) < 1e-2


def test_toeplitz_normal_matches_the_nufft_pair():
    nufft = NUFFT(TRAJ, (4, 24, 20), dcf=np.linspace(0.1, 2.0, 300))
    x = _random((4, 24, 20), 13)
    assert _relative(nufft.normal()(x), nufft.H(nufft(x))) < 1e-3


def test_pipe_menon_weights_are_one_on_the_nyquist_grid_and_grow_with_radius_on_spokes():
    ny, nx = 32, 32
    ky, kx = np.meshgrid((np.arange(ny) - ny // 2) / ny, (np.arange(nx) - nx // 2) / nx, indexing="ij")
    grid = pipe_menon_dcf(np.stack([kx.ravel(), ky.ravel()], axis=1), (ny, nx))
    assert grid.shape == (ny * nx,) and grid.dtype == torch.float32
    np.testing.assert_allclose(grid.numpy(), 1.0, atol=0.02)

    content = simulate_phantom(PhantomSpec(matrix=64, coils=1, trajectory="radial", noise=0.0))
    traj = np.concatenate(content.blocks[-1].traj)
    weights = pipe_menon_dcf(traj, (64, 64)).numpy()
    # The weights are the k-space area each sample stands for, in Nyquist grid cells: together the disc the
    # spokes cover, pi/4 of the 64 x 64 grid ...
    assert weights.sum() == pytest.approx(np.pi / 4 * 64**2, rel=0.02)
    # ... and growing with the radius as the spokes thin out (golden-angle gaps vary, so only roughly 2x).
    radius = np.hypot(traj[:, 0], traj[:, 1])
    median = {r: np.median(weights[np.abs(radius - r) < 0.01]) for r in (0.2, 0.4)}
    assert median[0.4] / median[0.2] == pytest.approx(2.0, rel=0.15)


def test_remove_readout_oversampling_crops_the_image_and_keeps_empty_lines_empty():
    kspace = _random((2, 8, 32), 14).numpy()
    kspace[:, 3] = 0
    cropped = remove_readout_oversampling(kspace, 16)
    assert cropped.shape == (2, 8, 16) and cropped.dtype == np.complex64
    assert not cropped[:, 3].any()
    expected = crop_center(centered_ifft(kspace, (-1,)), 16, -1)
    np.testing.assert_allclose(centered_ifft(cropped, (-1,)), expected, atol=2e-5)
    assert remove_readout_oversampling(kspace, 32) is kspace
    with pytest.raises(InvalidDataError, match="fewer than the 64"):
        remove_readout_oversampling(kspace, 64)
