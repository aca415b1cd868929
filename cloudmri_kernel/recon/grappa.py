"""GRAPPA: missing phase-encoding lines as weighted sums of acquired neighbours, calibrated on the ACS lines.

Data are 2D, one slice: k-space (coils, ny, nx) with ky undersampled, a boolean mask (ny,) of the acquired
imaging lines, and calibration k-space (coils, lines, nx_cal) that is fully sampled over its lines. Works on
NumPy arrays or torch tensors (returned as given) and computes in torch on ``device``.

Each missing line is estimated from its ``kernel[0]`` nearest acquired lines, half below and half above where
the data allow, and ``kernel[1]`` readout neighbours. The relative positions of those source lines (the
*pattern*) decide the weights; uniform undersampling has R-1 patterns, and irregular sampling (the edges of a
partial Fourier acquisition, lines missing at random) simply has more. Lines outside the first and last acquired
line are never extrapolated: they stay zero, for a partial Fourier method to fill.

References:
    Griswold MA, Jakob PM, Heidemann RM, Nittka M, Jellus V, Wang J, Kiefer B, Haase A. Generalized
    autocalibrating partially parallel acquisitions (GRAPPA). MRM 2002;47:1202-1210.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.recon.tensors import ArrayLike, like_input, to_tensor

#: Relative ky positions of a pattern's source lines, target at 0, ascending.
Pattern = tuple[int, ...]


def calibration_lines(calibration: ArrayLike) -> np.ndarray:
    """Indices of the ky lines (axis -2) that hold any non-zero sample, e.g. of ``SortedKSpace.calibration``."""
    values = to_tensor(calibration)
    filled = (values != 0).reshape(-1, values.shape[-2], values.shape[-1]).any(dim=(0, 2))
    return np.flatnonzero(filled.cpu().numpy())


def calibration_region(calibration: ArrayLike) -> ArrayLike:
    """The longest run of consecutive filled ky lines of (coils, ny, nx) calibration data, (coils, lines, nx).

    Turns ``SortedKSpace.calibration`` (ACS lines in place, zeros elsewhere) into the block that
    :func:`grappa_weights` and :func:`cloudmri_kernel.recon.coils.espirit_maps` take.
    """
    lines = calibration_lines(calibration)
    if lines.size == 0:
        raise InvalidDataError("the calibration data are all zero: the file has no lines flagged for calibration; "
                               "pass calibration lines from a reference scan instead")
    runs = np.split(lines, np.flatnonzero(np.diff(lines) != 1) + 1)
    longest = max(runs, key=len)
    return calibration[..., int(longest[0]):int(longest[-1]) + 1, :]


def uniform_patterns(acceleration: int, kernel_lines: int) -> list[Pattern]:
    """The R-1 source patterns of uniform undersampling: lines R apart, the target between the middle two."""
    below = kernel_lines // 2
    steps = acceleration * np.arange(-below + 1, kernel_lines - below + 1)
    return [tuple(int(s) for s in steps - offset) for offset in range(1, acceleration)]


def _readout_offsets(width: int) -> np.ndarray:
    return np.arange(-(width // 2), width - width // 2)


def _sources(data: torch.Tensor, rows: torch.Tensor, width: int) -> torch.Tensor:
    """(targets * nx, coils * lines * width) source matrix: for each target row in ``rows`` (targets, lines)
    and readout sample, the kernel's neighbours, zero beyond the readout edges."""
    coils, nx = data.shape[0], data.shape[-1]
    lines = data[:, rows, :]  # (C, targets, sy, nx)
    offsets = _readout_offsets(width)
    padded = torch.nn.functional.pad(lines, (int(-offsets[0]), int(offsets[-1])))
    patches = padded.unfold(-1, width, 1)  # (C, targets, sy, nx, sx)
    return patches.permute(1, 3, 0, 2, 4).reshape(rows.shape[0] * nx, coils * rows.shape[1] * width)


def _fit(calibration: torch.Tensor, pattern: Pattern, width: int, lamda: float) -> torch.Tensor:
    """Weights (coils * lines * width, coils) of one pattern by Tikhonov-regularized least squares."""
    coils, lines, nx = calibration.shape
    offsets = torch.tensor(pattern, device=calibration.device)
    targets = torch.arange(max(0, -pattern[0]), lines - max(0, pattern[-1]), device=calibration.device)
    readout = _readout_offsets(width)
    inner = slice(int(-readout[0]), nx - int(readout[-1]))
    if targets.numel() == 0 or inner.stop - inner.start < 1:
        raise InvalidDataError(f"the calibration region ({lines} lines × {nx} samples) is too small for a GRAPPA "
                               f"kernel spanning {pattern[-1] - pattern[0] + 1} lines × {width} samples: acquire "
                               f"more calibration lines or pass a smaller kernel")
    sources = _sources(calibration, targets[:, None] + offsets[None, :], width)
    sources = sources.reshape(targets.numel(), nx, -1)[:, inner].reshape(-1, sources.shape[-1])
    wanted = calibration[:, targets, inner].permute(1, 2, 0).reshape(-1, coils)
    gram = (sources.conj().T @ sources).to(torch.complex128)
    regularization = lamda * gram.diagonal().real.mean()
    gram = gram + regularization * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    rhs = (sources.conj().T @ wanted).to(torch.complex128)
    return torch.linalg.solve(gram, rhs).to(calibration.dtype)


def _check_settings(acceleration: int, kernel: tuple[int, int], lamda: float) -> None:
    if acceleration < 1 or len(kernel) != 2 or min(kernel) < 1 or lamda < 0:
        raise UsageError(f"GRAPPA needs acceleration >= 1, a kernel (lines, points) of at least 1×1 and lamda >= 0, "
                         f"got acceleration={acceleration}, kernel={kernel}, lamda={lamda}")


def grappa_weights(calibration: ArrayLike, acceleration: int, kernel: tuple[int, int] = (4, 5),
                   lamda: float = 0.01, patterns: Sequence[Pattern] | None = None,
                   device: str | torch.device | None = None) -> dict[Pattern, ArrayLike]:
    """GRAPPA weights fitted on fully sampled calibration lines.

    For a pattern with source lines at relative ky positions :math:`d_1 < \\dots < d_{S_y}` and readout
    offsets :math:`e \\in \\{-\\lfloor S_x/2 \\rfloor, \\dots\\}`, every calibration position gives one row of
    the source matrix A and the target row b (all coils):

    .. math::

        A_{(y,x),\\,(c,j,e)} = s_c(y + d_j, x + e), \\qquad b_{(y,x),\\,c'} = s_{c'}(y, x),

        W = (A^H A + \\lambda I)^{-1} A^H b, \\qquad \\lambda = \\texttt{lamda}\\cdot\\operatorname{tr}(A^H A) / n,

    with n the number of columns of A, so ``lamda`` is relative to the mean eigenvalue. A missing sample is then
    :math:`\\hat s_{c'}(y, x) = \\sum_{c,j,e} s_c(y + d_j, x + e)\\, W_{(c,j,e),\\,c'}`.

    Args:
        calibration: complex (coils, lines, nx_cal), every line acquired (ACS block, e.g. from
            :func:`calibration_region`, or the centre of a separate reference scan with the same FOV).
        acceleration: R; without ``patterns`` the weights are for the R-1 patterns of uniform sampling.
        kernel: (source lines S_y, readout points S_x).
        lamda: relative Tikhonov regularization.
        patterns: source patterns to fit instead of the uniform ones (see :data:`Pattern`).
        device: where to compute.

    Returns:
        ``{pattern: weights (coils * S_y * S_x, coils)}``, the weights NumPy or torch as ``calibration``.

    References:
        Griswold MA et al. Generalized autocalibrating partially parallel acquisitions (GRAPPA).
        MRM 2002;47:1202-1210.
    """
    _check_settings(acceleration, kernel, lamda)
    lines, width = kernel
    data = to_tensor(calibration, device)
    if data.ndim != 3:
        raise UsageError(f"GRAPPA calibration must be (coils, lines, nx), got shape {tuple(data.shape)}")
    data = data if data.is_complex() else data.to(torch.complex64)
    wanted = uniform_patterns(acceleration, lines) if patterns is None else [tuple(p) for p in patterns]
    return {p: like_input(_fit(data, p, width, lamda), calibration) for p in wanted}


def _line_patterns(acquired: np.ndarray, targets: np.ndarray, lines: int) -> np.ndarray:
    """(targets, lines) source-line offsets: the nearest acquired lines, half below and half above if possible."""
    above_first = np.searchsorted(acquired, targets)  # acquired[above_first] is the first line above
    available_above = acquired.size - above_first
    below = np.minimum(above_first, np.maximum(lines // 2, lines - available_above))
    first = above_first - below
    return acquired[first[:, None] + np.arange(lines)[None, :]] - targets[:, None]


def reconstruct_grappa(kspace: ArrayLike, mask: ArrayLike, calibration: ArrayLike | None, acceleration: int,
                       kernel: tuple[int, int] = (4, 5), lamda: float = 0.01, embedded: bool = True,
                       device: str | torch.device | None = None) -> ArrayLike:
    """Fill the missing ky lines of undersampled k-space with GRAPPA.

    Lines strictly between the first and the last acquired line are estimated (see the module for the
    source patterns; weights by :func:`grappa_weights`, one fit per pattern), acquired lines keep their
    measured data, and with embedded calibration the measured ACS lines replace their estimates too.

    Args:
        kspace: complex (coils, ny, nx), zeros where not acquired (``SortedKSpace.kspace`` of one slice).
        mask: bool (ny,), the acquired imaging lines (``SortedKSpace.mask`` of one slice).
        calibration: complex k-space, fully sampled over its calibration lines. ``embedded=True``: (coils, ny,
            nx) with the ACS lines in place and zeros elsewhere (``SortedKSpace.calibration``); the weights
            come from its longest run of lines, and all its lines are copied into the result. ``embedded=False``:
            (coils, lines, nx_cal) from a separate reference scan with the same FOV, only for the weights.
        acceleration: R of the acquisition; acquired lines more than R apart are an error (wrong mask or R).
        kernel: (source lines, readout points).
        lamda: relative Tikhonov regularization of the weight fit.
        embedded: whether the calibration lines belong to this acquisition (see ``calibration``).
        device: where to compute.

    Returns:
        complex (coils, ny, nx), same kind as ``kspace``.

    References:
        Griswold MA et al. Generalized autocalibrating partially parallel acquisitions (GRAPPA).
        MRM 2002;47:1202-1210.
    """
    _check_settings(acceleration, kernel, lamda)
    if calibration is None:
        raise UsageError("GRAPPA needs calibration data and this k-space has no lines flagged for calibration: pass "
                         "the centre of a fully sampled reference scan with embedded=False")
    data = to_tensor(kspace, device)
    data = data if data.is_complex() else data.to(torch.complex64)
    acquired_lines = np.asarray(to_tensor(mask).cpu().numpy(), dtype=bool)
    if data.ndim != 3 or acquired_lines.shape != (data.shape[1],):
        raise UsageError(f"GRAPPA needs k-space (coils, ny, nx) and a mask (ny,), got {tuple(data.shape)} and "
                         f"{acquired_lines.shape}: pass one slice, e.g. kspace[s, :, 0] and mask[s, 0]")
    reference = to_tensor(calibration, data.device).to(data.dtype)
    if embedded and tuple(reference.shape) != tuple(data.shape):
        raise UsageError(f"embedded calibration must have the k-space's shape {tuple(data.shape)} with the ACS "
                         f"lines in place, got {tuple(reference.shape)}; for a separate reference scan pass "
                         f"embedded=False")
    acquired = np.flatnonzero(acquired_lines)
    if acquired.size < kernel[0]:
        raise InvalidDataError(f"{acquired.size} acquired lines are fewer than the GRAPPA kernel's "
                               f"{kernel[0]} source lines")
    widest = int(np.diff(acquired).max(initial=1))
    if widest > acceleration:
        raise UsageError(f"the mask has a gap of {widest} lines between acquired lines, more than the acceleration "
                         f"R={acceleration}: check the mask and the header's acceleration factor")

    result = data.clone()
    targets = np.setdiff1d(np.arange(acquired[0] + 1, acquired[-1]), acquired)
    if targets.size:
        offsets = _line_patterns(acquired, targets, kernel[0])
        patterns, which = np.unique(offsets, axis=0, return_inverse=True)
        block = calibration_region(reference) if embedded else reference
        weights = grappa_weights(block, acceleration, kernel, lamda, [tuple(int(v) for v in p) for p in patterns])
        for index, (pattern, fitted) in enumerate(weights.items()):
            rows = torch.as_tensor(targets[which.ravel() == index], device=data.device)
            sources = _sources(data, rows[:, None] + torch.tensor(pattern, device=data.device)[None, :], kernel[1])
            estimate = (sources @ fitted).reshape(rows.numel(), data.shape[-1], data.shape[0])
            result[:, rows, :] = estimate.permute(2, 0, 1)
    if embedded:
        measured = torch.as_tensor(calibration_lines(reference), device=data.device)
        result[:, measured, :] = reference[:, measured, :]
    return like_input(result, kspace)


def object_support(image: ArrayLike, threshold: float = 0.1, margin: int = 4) -> np.ndarray:
    """Boolean mask of the object: magnitude above ``threshold`` × its maximum, grown by ``margin`` pixels.

    Meant for an alias-free image such as the low-resolution image of the calibration lines, so that the
    support of an undersampled acquisition can be judged without its aliases.
    """
    magnitude = np.abs(np.asarray(to_tensor(image).cpu().numpy()))
    support = magnitude > threshold * magnitude.max()
    return ndimage.binary_dilation(support, iterations=margin) if margin > 0 else support


def ghost_region(support: np.ndarray, acceleration: int, axis: int = -2) -> np.ndarray:
    """Where the aliases of uniform R-fold undersampling land outside the object.

    Undersampling ky by R replicates the object shifted by :math:`k\\,n_y/R`, k = 1..R-1, circularly along the
    phase-encoding axis; the region is the union of those shifted supports minus the support itself.
    """
    support = np.asarray(support, dtype=bool)
    n = support.shape[axis]
    region = np.zeros_like(support)
    for k in range(1, acceleration):
        region |= np.roll(support, round(k * n / acceleration), axis=axis)
    return region & ~support


def ghost_energy_fraction(image: ArrayLike, support: np.ndarray, acceleration: int, axis: int = -2) -> float:
    """Fraction of the image energy in the ghost region: :math:`\\sum_{r \\in G} |m(r)|^2 / \\sum_r |m(r)|^2`.

    A quantitative aliasing check for uniform undersampling: near zero for a clean reconstruction, large for
    the zero-filled image, whose ghosts carry (R-1)/R of the energy in the limit of a small object.

    Args:
        image: magnitude or complex image (ny, nx).
        support: the object's mask, e.g. from :func:`object_support` of an alias-free low-resolution image.
        acceleration: R.
        axis: the phase-encoding axis of the image.
    """
    energy = np.abs(np.asarray(to_tensor(image).cpu().numpy())) ** 2
    return float(energy[ghost_region(support, acceleration, axis)].sum() / energy.sum())
