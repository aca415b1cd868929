"""Iterative reconstructions: SENSE, compressed sensing (L1-wavelet, total variation) and non-Cartesian SENSE.

Each method is a forward model from :mod:`cloudmri_kernel.recon.operators` plus a solver from
:mod:`cloudmri_kernel.recon.solvers`, on torch tensors on the device asked for (``"cpu"``, ``"cuda"``...).

Inputs are one 2D slice: ``kspace`` complex (coils, ky, kx) with the readout oversampling already removed
(:func:`~cloudmri_kernel.recon.operators.remove_readout_oversampling`), k-space centred and unitary as in
:func:`~cloudmri_kernel.recon.fft.centered_fft`; ``maps`` complex (coils, y, x); non-Cartesian ``samples``
(coils, points) with ``traj`` (points, 2) (kx, ky) in cycles/pixel. numpy arrays or torch tensors.

Regularization weights (λ) follow sigpy: the objectives are written out in each function and are those of
``sigpy.mri.app.SenseRecon``, ``L1WaveletRecon`` and ``TotalVariationRecon`` with the same λ, in the units of the
data (no hidden rescaling), so a λ moves between the two unchanged. BART's ``pics`` instead divides the
k-space by a scale estimated from the zero-filled image before solving; ``normalize=True`` does the same here
(and multiplies the image back, like ``pics -S``), so λ then plays the role of ``pics -r``.

Where every coil map vanishes (outside an ESPIRiT support, say) the model observes nothing, so the data do not
determine the image there. CG-SENSE keeps zero there by itself (its iterates stay in the range of
:math:`A^H`); the sparsity penalties would instead extrapolate the object into that region, so the
compressed-sensing images are set to zero there after solving. With maps that cover the whole field of view
nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.recon.operators import (
    FFT,
    NUFFT,
    CoilSensitivity,
    FiniteDifference,
    SenseOperator,
    Wavelet,
    pipe_menon_dcf,
)
from cloudmri_kernel.recon.solvers import SolverResult, conjugate_gradient, fista, max_eigenvalue, primal_dual_l1
from cloudmri_kernel.recon.tensors import to_tensor

#: :math:`\|D\|^2` of 2D circular finite differences (the largest eigenvalue of the periodic Laplacian).
_FINITE_DIFFERENCE_NORM2 = 8.0


@dataclass
class ReconResult:
    """A reconstructed slice.

    Attributes:
        image: complex64 (y, x).
        iterations: solver iterations (0 for direct methods).
        converged: whether the solver met its tolerance; False means it stopped at ``max_iter`` (the image is
            still its best iterate).
        residuals: the solver's per-iteration convergence measure (see
            :class:`~cloudmri_kernel.recon.solvers.SolverResult`).
    """

    image: np.ndarray
    iterations: int
    converged: bool
    residuals: list[float] = field(default_factory=list)


def _check_finite(values: torch.Tensor, what: str, axes: Sequence[str]) -> None:
    bad = ~torch.isfinite(values)
    count = int(bad.sum())
    if count:
        first = [int(i) for i in torch.nonzero(bad)[0]]
        where = ", ".join(f"{name} {index}" for name, index in zip(axes, first, strict=True))
        raise InvalidDataError(f"{what} has {count} NaN/Inf value{'s' if count > 1 else ''}, first at {where}: "
                               f"repair or drop those samples before reconstructing")


def _cartesian_inputs(kspace, maps, mask, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-space (masked), maps and a (y, x) or (y, 1) float mask as tensors on ``device``, checked."""
    kspace = to_tensor(kspace, device, torch.complex64)
    maps = to_tensor(maps, device, torch.complex64)
    if kspace.ndim != 3:
        raise UsageError(f"k-space must be one slice (coils, ky, kx), got shape {tuple(kspace.shape)}")
    if maps.shape != kspace.shape:
        hint = (": remove the readout oversampling first (remove_readout_oversampling)"
                if maps.shape[:2] == kspace.shape[:2] and kspace.shape[2] > maps.shape[2] else "")
        raise UsageError(f"k-space has shape {tuple(kspace.shape)} but the coil maps have {tuple(maps.shape)}; "
                         f"they must match{hint}")
    _check_finite(kspace, "k-space", ("coil", "ky", "kx"))
    _check_finite(maps, "the coil sensitivity maps", ("coil", "y", "x"))
    ny, nx = kspace.shape[1:]
    if mask is None:
        mask = (kspace != 0).any(dim=0)
    else:
        mask = torch.as_tensor(mask, device=kspace.device)
        if mask.shape == (ny,):
            mask = mask.reshape(ny, 1)
        elif mask.shape != (ny, nx):
            raise UsageError(f"the sampling mask must be ({ny},) or ({ny}, {nx}) for k-space of shape "
                             f"{tuple(kspace.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(torch.float32)
    if not bool(mask.any()):
        raise InvalidDataError("the sampling mask is empty: no k-space sample was acquired")
    return kspace * mask, maps, mask


def _bart_scale(kspace: torch.Tensor) -> float:
    """BART's ``pics`` data scale: of the zero-filled root-sum-of-squares image, its 90th percentile, or its
    maximum when the distribution is peaked (max - p90 >= 2 (p90 - median))."""
    rss = torch.linalg.vector_norm(FFT(kspace.shape).adjoint(kspace), dim=0).flatten()
    median, p90, peak = torch.quantile(rss.float().cpu(), torch.tensor([0.5, 0.9, 1.0])).tolist()
    scale = p90 if peak - p90 < 2 * (p90 - median) else peak
    return scale if scale > 0 else 1.0


def _result(solved: SolverResult, scale: float = 1.0, maps: torch.Tensor | None = None) -> ReconResult:
    """The solver's image as numpy, scaled back, and zero where all ``maps`` vanish (see the module)."""
    image = solved.x * scale
    if maps is not None:
        image = image * (maps.abs() ** 2).sum(dim=0).gt(0)
    return ReconResult(image.detach().cpu().numpy().astype(np.complex64), solved.iterations, solved.converged,
                       solved.residuals)


def reconstruct_sense(kspace, maps, mask=None, lamda: float = 0.0, max_iter: int = 30, tol: float = 1e-6,
                      device: str | torch.device = "cpu") -> ReconResult:
    """SENSE by conjugate gradients on the normal equations (CG-SENSE).

    .. math::

        \\hat x = \\arg\\min_x \\tfrac12 \\|M F S x - y\\|_2^2 + \\tfrac{\\lambda}{2}\\|x\\|_2^2
        \\quad\\Leftrightarrow\\quad (A^H A + \\lambda I)\\,x = A^H y,\\ A = MFS

    with S the coil sensitivities, F the centred unitary FFT and M the sampling mask; the objective and λ of
    ``sigpy.mri.app.SenseRecon``. Starts from zero; stops when :math:`\\|r\\| \\le \\mathrm{tol}\\,\\|A^Hy\\|`.

    Args:
        kspace: complex (coils, ky, kx), zeros where not sampled.
        maps: complex (coils, y, x), same shape.
        mask: bool (ky,) or (ky, kx); default: where any coil's k-space is nonzero.
        lamda: Tikhonov weight λ ≥ 0.
        max_iter: CG iterations at most.
        tol: relative residual to stop at.
        device: torch device to compute on.

    Returns:
        The complex image; ``converged`` False if ``max_iter`` was reached first.

    Raises:
        InvalidDataError: NaN/Inf in the k-space or maps (the message names the first), or an empty mask.
        UsageError: shapes that do not fit together.

    References:
        Pruessmann KP, Weiger M, Börnert P, Boesiger P. Advances in sensitivity encoding with arbitrary k-space
        trajectories. MRM 2001;46:638-651.
        Pruessmann KP et al. SENSE: sensitivity encoding for fast MRI. MRM 1999;42:952-962.
    """
    y, maps, mask = _cartesian_inputs(kspace, maps, mask, device)
    model = SenseOperator(maps, mask)
    solved = conjugate_gradient(model.normal(), model.H(y), max_iter=max_iter, tol=tol, lamda=lamda)
    return _result(solved)


def soft_threshold(values: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\mathrm{sgn}(v) \\max(|v| - t, 0)` for complex v (the prox of :math:`t\\|\\cdot\\|_1`), and the L1
    norm of the result."""
    magnitude = values.abs()
    shrunk = (magnitude - threshold).clamp_min_(0)
    return values * (shrunk / magnitude.clamp_min_(torch.finfo(magnitude.dtype).tiny)), shrunk.sum()


def reconstruct_cs_wavelet(kspace, maps, mask=None, lamda: float = 0.005, max_iter: int = 100, tol: float = 1e-6,
                           wavelet: str = "db4", level: int | None = None, normalize: bool = False,
                           random_shift: bool = False, seed: int = 0, coarsest: int | None = None,
                           device: str | torch.device = "cpu") -> ReconResult:
    """Compressed-sensing SENSE with an L1 penalty on orthonormal wavelet coefficients, solved by FISTA.

    .. math::

        \\hat x = \\arg\\min_x \\tfrac12 \\|M F S x - y\\|_2^2 + \\lambda \\|\\Psi x\\|_1

    the objective of ``sigpy.mri.app.L1WaveletRecon``. Ψ is an orthonormal, periodized 2D DWT
    (:class:`~cloudmri_kernel.recon.operators.Wavelet`), so the proximal step
    :math:`\\Psi^H \\mathrm{soft}(\\Psi v, t\\lambda)` is exact; all coefficients, the approximation included,
    are thresholded, as in sigpy. Step :math:`t = 1/L` with :math:`L = \\|A^HA\\|` from 30 power iterations.

    Args:
        kspace: complex (coils, ky, kx), zeros where not sampled.
        maps: complex (coils, y, x).
        mask: bool (ky,) or (ky, kx); default: where k-space is nonzero.
        lamda: λ, in the units of the data (see the module on ``normalize``). For images of peak ~1,
            0.001 to 0.01.
        max_iter: FISTA iterations at most.
        tol: relative change of the image to stop at.
        wavelet: orthogonal pywt wavelet name.
        level: decomposition levels (default: see ``coarsest``).
        coarsest: with ``level`` None, decompose only while the coarse scale keeps at least this many pixels
            on its shorter side (16: 3 levels at 128², 4 at 256²); None: the most levels the image and filter
            allow, as SigPy. BART's ``pics`` (``minsize`` 16) decomposes while a band still has 16 samples, and
            its symmetric-border bands hold (n + 3) / 2, so it takes one level more (4 at 128²); on the 128²
            benchmark phantoms 3 and 4 levels give the same NRMSE within 1 % (``benchmarks/wavelet_gap.py``).
        normalize: scale the data as BART's ``pics`` does before solving, and the image back after.
        random_shift: cycle spinning, as BART's ``pics`` does by default: every proximal step thresholds the
            wavelet coefficients of the image circularly shifted by a random offset (below the coarsest scale)
            and shifts back. This removes the blocky artefacts of a shift-variant transform; the objective then
            changes from step to step, so ``tol`` compares iterates, the reported objective is approximate, and
            the result is the mean of the last half of the iterates (50 of 100: suffix averaging, Rakhlin et
            al. 2012), each thresholded under another shift, rather than the one with the lowest reported
            objective (which would rank iterates by penalties under different shifts; see
            :func:`~cloudmri_kernel.recon.solvers.fista`). Half rather than a fifth: at 128², R = 6 the longer
            mean lowers NRMSE by 3–4 % more (``docs/benchmarks.md``).
        seed: seed of the shifts, so that a reconstruction is reproducible.
        device: torch device to compute on.

    References:
        Lustig M, Donoho D, Pauly JM. Sparse MRI: the application of compressed sensing for rapid MR imaging.
        MRM 2007;58:1182-1195.
        Beck A, Teboulle M. A fast iterative shrinkage-thresholding algorithm for linear inverse problems.
        SIAM J Imaging Sci 2009;2:183-202.
        Coifman RR, Donoho DL. Translation-invariant de-noising. Wavelets and Statistics, 1995 (cycle spinning).
        Uecker M et al. Berkeley Advanced Reconstruction Toolbox. ISMRM 2015 (random shifts in ``pics``).
    """
    y, maps, mask = _cartesian_inputs(kspace, maps, mask, device)
    scale = _bart_scale(y) if normalize else 1.0
    model = SenseOperator(maps, mask)
    normal = model.normal()
    if level is None and coarsest is not None:
        level = max(1, int(math.log2(min(model.ishape[-2:]) / coarsest)))
        level = min(level, Wavelet(model.ishape, wavelet, device=maps.device).level)
    transform = Wavelet(model.ishape, wavelet, level, device=maps.device)

    generator = torch.Generator().manual_seed(seed)
    period = 2 ** transform.level

    def prox(v: torch.Tensor, step: float) -> tuple[torch.Tensor, float]:
        shift = tuple(int(s) for s in torch.randint(0, period, (2,), generator=generator)) if random_shift else (0, 0)
        shifted = torch.roll(v, shift, dims=(-2, -1))
        coefficients, l1 = soft_threshold(transform(shifted), lamda * step)
        result = transform.H(coefficients)
        return torch.roll(result, (-shift[0], -shift[1]), dims=(-2, -1)), lamda * float(l1)

    lipschitz = max_eigenvalue(normal, model.ishape, device=maps.device)
    if lipschitz == 0:
        raise InvalidDataError("the forward model is zero: the coil maps are all zero")
    solved = fista(normal, model.H(y / scale), prox, 1.0 / lipschitz, max_iter=max_iter, tol=tol,
                   keep_best=not random_shift, average=max(1, max_iter // 2))
    return _result(solved, scale, maps)


def reconstruct_cs_tv(kspace, maps, mask=None, lamda: float = 0.005, max_iter: int = 100, tol: float = 1e-6,
                      normalize: bool = False, device: str | torch.device = "cpu") -> ReconResult:
    """Compressed-sensing SENSE with a total-variation penalty, solved by a primal-dual method.

    .. math::

        \\hat x = \\arg\\min_x \\tfrac12 \\|M F S x - y\\|_2^2 + \\lambda \\|D x\\|_1

    with D the circular finite differences along y and x and the entrywise complex L1 norm (anisotropic TV),
    the objective of ``sigpy.mri.app.TotalVariationRecon``. Solved by the Condat-Vu form of the
    Chambolle-Pock primal-dual iteration (:func:`~cloudmri_kernel.recon.solvers.primal_dual_l1`), which takes
    the data term by its gradient and so needs one :math:`A^HA` per iteration and no inner solves.

    Args:
        kspace: complex (coils, ky, kx), zeros where not sampled.
        maps: complex (coils, y, x).
        mask: bool (ky,) or (ky, kx); default: where k-space is nonzero.
        lamda: λ, in the units of the data (see the module on ``normalize``).
        max_iter: iterations at most.
        tol: relative change of the image to stop at.
        normalize: scale the data as BART's ``pics`` does before solving, and the image back after.
        device: torch device to compute on.

    References:
        Block KT, Uecker M, Frahm J. Undersampled radial MRI with multiple coils. Iterative image
        reconstruction using a total variation constraint. MRM 2007;57:1086-1098.
        Chambolle A, Pock T. A first-order primal-dual algorithm for convex problems with applications to
        imaging. J Math Imaging Vis 2011;40:120-145.
        Condat L. A primal-dual splitting method for convex optimization involving Lipschitzian, proximable and
        linear composite terms. J Optim Theory Appl 2013;158:460-479.
    """
    y, maps, mask = _cartesian_inputs(kspace, maps, mask, device)
    scale = _bart_scale(y) if normalize else 1.0
    model = SenseOperator(maps, mask)
    normal = model.normal()
    lipschitz = max_eigenvalue(normal, model.ishape, device=maps.device)
    if lipschitz == 0:
        raise InvalidDataError("the forward model is zero: the coil maps are all zero")
    solved = primal_dual_l1(normal, model.H(y / scale), FiniteDifference(model.ishape), lamda, lipschitz,
                            _FINITE_DIFFERENCE_NORM2, max_iter=max_iter, tol=tol)
    return _result(solved, scale, maps)


def _non_cartesian_inputs(samples, traj, image_shape, maps, device) -> tuple[torch.Tensor, torch.Tensor,
                                                                           torch.Tensor | None, tuple[int, int]]:
    samples = to_tensor(samples, device, torch.complex64)
    traj = to_tensor(traj, samples.device, torch.float32)
    if samples.ndim != 2:
        raise UsageError(f"samples must be (coils, points), got shape {tuple(samples.shape)}")
    if traj.ndim != 2 or traj.shape != (samples.shape[1], 2):
        raise UsageError(f"the trajectory must be (points, 2) = ({samples.shape[1]}, 2) for samples of shape "
                         f"{tuple(samples.shape)}, got {tuple(traj.shape)}")
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != 2:
        raise UsageError(f"image_shape must be (y, x), got {image_shape}")
    _check_finite(samples, "the k-space samples", ("coil", "sample"))
    _check_finite(traj, "the trajectory", ("sample", "dimension"))
    reach = float(traj.abs().max())
    if reach > 0.5 + 1e-6:
        raise InvalidDataError(f"the trajectory reaches {reach:.3g} cycles/pixel; it must lie within [-0.5, 0.5] "
                               f"(MRD convention): rescale it, e.g. divide by the matrix size if it is in 1/FOV")
    if maps is not None:
        maps = to_tensor(maps, samples.device, torch.complex64)
        if maps.shape != (samples.shape[0], *image_shape):
            raise UsageError(f"coil maps must be (coils, y, x) = ({samples.shape[0]}, {image_shape[0]}, "
                             f"{image_shape[1]}), got {tuple(maps.shape)}")
        _check_finite(maps, "the coil sensitivity maps", ("coil", "y", "x"))
    return samples, traj, maps, image_shape


def reconstruct_nufft_gridding(samples, traj, image_shape: Sequence[int], maps=None, dcf=None,
                               device: str | torch.device = "cpu") -> ReconResult:
    """Gridding: density-compensated adjoint NUFFT of every coil, then coil combination.

    .. math::

        I_c = A^H (w \\odot y_c), \\qquad
        \\hat x = \\frac{\\sum_c \\bar S_c I_c}{\\sum_c |S_c|^2}
        \\ \\text{(with maps)}, \\quad
        \\hat x = \\sqrt{\\textstyle\\sum_c |I_c|^2}\\ \\text{(without: root-sum-of-squares, real)}

    with A the unitary-scaled NUFFT and w the Pipe-Menon weights (normalized so a Nyquist-sampled Cartesian
    grid gets 1), so the image has the scale of the object.

    Args:
        samples: complex (coils, points).
        traj: (points, 2) (kx, ky), cycles/pixel.
        image_shape: (y, x).
        maps: optional complex (coils, y, x).
        dcf: optional (points,) weights instead of :func:`~cloudmri_kernel.recon.operators.pipe_menon_dcf`.
        device: torch device to compute on.

    References:
        Jackson JI, Meyer CH, Nishimura DG, Macovski A. Selection of a convolution function for Fourier
        inversion using gridding. IEEE TMI 1991;10:473-478.
        Pipe JG, Menon P. Sampling density compensation in MRI. MRM 1999;41:179-186.
        Roemer PB et al. The NMR phased array. MRM 1990;16:192-225.
    """
    samples, traj, maps, image_shape = _non_cartesian_inputs(samples, traj, image_shape, maps, device)
    weights = (pipe_menon_dcf(traj, image_shape) if dcf is None
               else to_tensor(dcf, samples.device, torch.float32).reshape(-1))
    coil_images = NUFFT(traj, (samples.shape[0], *image_shape)).adjoint(samples * weights)
    if maps is None:
        image = torch.linalg.vector_norm(coil_images, dim=0).to(torch.complex64)
    else:
        energy = (maps.abs() ** 2).sum(dim=0)
        image = torch.linalg.vecdot(maps, coil_images, dim=0) / torch.where(energy > 0, energy, 1.0)
    return ReconResult(image.cpu().numpy().astype(np.complex64), 0, True, [])


def reconstruct_nufft_sense(samples, traj, image_shape: Sequence[int], maps, lamda: float = 0.0, max_iter: int = 30,
                            tol: float = 1e-6, device: str | torch.device = "cpu") -> ReconResult:
    """Non-Cartesian SENSE by conjugate gradients, with the normal operator by Toeplitz embedding.

    .. math::

        \\hat x = \\arg\\min_x \\tfrac12 \\|A S x - y\\|_2^2 + \\tfrac{\\lambda}{2}\\|x\\|_2^2
        \\quad\\Leftrightarrow\\quad (S^H A^H A S + \\lambda I)\\,x = S^H A^H y

    with A the unitary-scaled NUFFT (:class:`~cloudmri_kernel.recon.operators.NUFFT`). The least-squares
    problem is unweighted (no density compensation inside, so the solution is the noise-optimal one, Fessler's
    form); :math:`A^H A` is applied as one FFT convolution on a 2x grid, with no gridding per iteration.
    Start from zero; radial and spiral data need some 10-30 iterations, more than Cartesian SENSE.

    Args:
        samples: complex (coils, points).
        traj: (points, 2) (kx, ky), cycles/pixel.
        image_shape: (y, x).
        maps: complex (coils, y, x).
        lamda: Tikhonov weight λ ≥ 0 (as sigpy's ``SenseRecon`` with ``coord``).
        max_iter: CG iterations at most.
        tol: relative residual to stop at.
        device: torch device to compute on.

    References:
        Pruessmann KP, Weiger M, Börnert P, Boesiger P. Advances in sensitivity encoding with arbitrary k-space
        trajectories. MRM 2001;46:638-651.
        Fessler JA. Model-based image reconstruction for MRI. IEEE Signal Process Mag 2010;27:81-89.
        Fessler JA et al. Toeplitz-based iterative image reconstruction for MRI with correction for magnetic
        field inhomogeneity. IEEE TSP 2005;53:3393-3402.
    """
    samples, traj, maps, image_shape = _non_cartesian_inputs(samples, traj, image_shape, maps, device)
    if maps is None:
        raise UsageError("non-Cartesian SENSE needs coil maps; use reconstruct_nufft_gridding without them")
    model = NUFFT(traj, maps.shape) * CoilSensitivity(maps)
    solved = conjugate_gradient(model.normal(), model.H(samples), max_iter=max_iter, tol=tol, lamda=lamda)
    return _result(solved)


__all__ = ["ReconResult", "reconstruct_cs_tv", "reconstruct_cs_wavelet", "reconstruct_nufft_gridding",
           "reconstruct_nufft_sense", "reconstruct_sense", "soft_threshold"]
