"""Partial Fourier reconstruction: images from k-space acquired on one side of the centre plus a symmetric band.

A real object has Hermitian-symmetric k-space, so the missing side is the conjugate mirror of the acquired one.
MR images are not real, but their phase is smooth: it is estimated from the symmetric low-frequency band and
removed (homodyne) or imposed (POCS). Both work along one k-space axis (``axis``, usually ky) on any number of
leading axes (coils, slices), each coil image with its own phase, and return complex images over ``axes``.

The acquired lines are a boolean mask along ``axis`` or a fraction: ``5/8`` means the first
``round(5/8 · n)`` lines (indices 0, 1, ...) as in BART's ``homodyne``; for the other side pass the mask
``np.arange(n) >= n - round(5/8 · n)``. The k-space centre is index n//2 (as in
:func:`cloudmri_kernel.recon.fft.centered_ifft`).

References:
    Noll DC, Nishimura DG, Macovski A. Homodyne detection in magnetic resonance imaging. IEEE TMI
    1991;10:154-163.
    Haacke EM, Lindskog ED, Lin W. A fast, iterative, partial-Fourier technique capable of local phase
    recovery. JMR 1991;92:126-145.
"""

from __future__ import annotations

import numpy as np
import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.recon.fft import centered_fft_torch, centered_ifft_torch
from cloudmri_kernel.recon.tensors import ArrayLike, like_input, to_tensor


def _acquired_lines(acquired: float | ArrayLike, n: int) -> np.ndarray:
    """Boolean (n,) of acquired lines from a mask or a fraction of the first lines."""
    if isinstance(acquired, float | int) and not isinstance(acquired, bool):
        if not 0.5 < acquired <= 1:
            raise UsageError(f"the acquired partial Fourier fraction must be above 0.5 and at most 1, got {acquired}")
        return np.arange(n) < round(acquired * n)
    lines = np.asarray(to_tensor(acquired).cpu().numpy(), dtype=bool)
    if lines.shape != (n,):
        raise UsageError(f"the partial Fourier mask must have one entry per line of the axis ({n}), got shape "
                         f"{lines.shape}")
    return lines


def _symmetric_half_width(lines: np.ndarray) -> int:
    """Largest h with every line in [n//2 - h, n//2 + h] acquired."""
    n, centre = lines.size, lines.size // 2
    if not lines[centre]:
        raise InvalidDataError("the k-space centre line is not acquired: partial Fourier needs the centre and a "
                               "band around it; check the mask and the k-space centre (index n//2)")
    h = 0
    while centre - h - 1 >= 0 and centre + h + 1 < n and lines[centre - h - 1] and lines[centre + h + 1]:
        h += 1
    return h


def _along(values: np.ndarray, axis: int, ndim: int, like: torch.Tensor) -> torch.Tensor:
    """A 1D profile shaped to broadcast along ``axis`` of an ndim-array."""
    shape = [1] * ndim
    shape[axis] = values.size
    return torch.as_tensor(values.reshape(shape), device=like.device)


def _phase(data: torch.Tensor, lines: np.ndarray, axis: int, axes: tuple[int, ...]) -> torch.Tensor:
    """Unit phasor of the low-resolution image from the symmetric band, Hann-windowed along ``axis``."""
    n, centre = lines.size, lines.size // 2
    h = _symmetric_half_width(lines)
    window = np.zeros(n)
    window[centre - h:centre + h + 1] = np.sin(np.pi * (np.arange(2 * h + 1) + 0.5) / (2 * h + 1)) ** 2
    lowres = centered_ifft_torch(data * _along(window, axis, data.ndim, data).to(data.real.dtype), axes)
    magnitude = lowres.abs()
    return torch.where(magnitude > 0, lowres / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny),
                       torch.ones_like(lowres))


def _prepare(kspace: ArrayLike, acquired: float | ArrayLike, axis: int, axes: tuple[int, ...],
             device: str | torch.device | None) -> tuple[torch.Tensor, np.ndarray, int, tuple[int, ...]]:
    data = to_tensor(kspace, device)
    data = data if data.is_complex() else data.to(torch.complex64)
    axis = axis % data.ndim
    axes = tuple(a % data.ndim for a in axes)
    if axis not in axes:
        raise UsageError(f"the partial Fourier axis {axis} must be one of the image axes {axes}")
    return data, _acquired_lines(acquired, data.shape[axis]), axis, axes


def homodyne(kspace: ArrayLike, acquired: float | ArrayLike, axis: int = -2, axes: tuple[int, ...] = (-2, -1),
             device: str | torch.device | None = None) -> ArrayLike:
    """Homodyne partial Fourier reconstruction.

    With the lines paired by the mirror :math:`k \\to -k` around the centre, the weighting

    .. math::

        w(k) + w(-k) = 2 \\ \\text{where either is acquired}, \\qquad w = 0 \\ \\text{where not acquired},

    (2 on the unpaired acquired side, 1 on paired lines, a linear ramp across the symmetric centre band to
    avoid a step) doubles the unpaired side so that, for a real image, the real part restores it:

    .. math::

        \\hat m(r) = \\operatorname{Re}\\{e^{-i\\varphi(r)} \\mathcal{F}^{-1}\\{w s\\}(r)\\}\\, e^{i\\varphi(r)},

    with :math:`\\varphi` the phase of the low-resolution image of the symmetric band (Hann window). The
    result has the low-resolution phase; its magnitude :math:`|\\hat m|` is the homodyne image.

    Args:
        kspace: complex, zeros where not acquired; centre at n//2 along each of ``axes``.
        acquired: bool mask (n,) along ``axis`` or the acquired fraction (see the module).
        axis: the partially acquired axis.
        axes: the image axes to transform (``axis`` among them).
        device: where to compute.

    Returns:
        complex images, the shape of ``kspace``, image domain along ``axes``.

    References:
        Noll DC, Nishimura DG, Macovski A. Homodyne detection in magnetic resonance imaging. IEEE TMI
        1991;10:154-163.
    """
    data, lines, axis, axes = _prepare(kspace, acquired, axis, axes, device)
    n, centre = lines.size, lines.size // 2
    h = _symmetric_half_width(lines)
    position = np.arange(n) - centre
    mirror = centre - position
    has_mirror = (mirror >= 0) & (mirror < n)
    paired = lines & has_mirror & lines[np.clip(mirror, 0, n - 1)]
    weight = np.where(lines, np.where(paired, 1.0, 2.0), 0.0)
    side = np.sign(lines[position > 0].sum() - lines[position < 0].sum())
    band = np.abs(position) <= h
    weight[band] = 1.0 + side * position[band] / (h + 1)
    phase = _phase(data, lines, axis, axes)
    image = centered_ifft_torch(data * _along(weight, axis, data.ndim, data).to(data.real.dtype), axes)
    return like_input((image * phase.conj()).real * phase, kspace)


def pocs(kspace: ArrayLike, mask: float | ArrayLike, axis: int = -2, iterations: int = 10,
         axes: tuple[int, ...] = (-2, -1), device: str | torch.device | None = None) -> ArrayLike:
    """Projection onto convex sets (POCS) partial Fourier reconstruction.

    Alternates between the image with the low-resolution phase :math:`\\varphi` (from the symmetric band) and
    k-space agreeing with the measured samples :math:`s` on the acquired set :math:`\\Omega`:

    .. math::

        x \\leftarrow |x|\\, e^{i\\varphi}, \\qquad
        x \\leftarrow \\mathcal{F}^{-1}\\{ \\mathbb{1}_\\Omega\\, s + \\mathbb{1}_{\\bar\\Omega} \\mathcal{F} x \\},

    starting from the zero-filled image. The result agrees with the data where they were measured.

    Args:
        kspace: complex, zeros where not acquired; centre at n//2 along each of ``axes``.
        mask: bool mask (n,) along ``axis`` or the acquired fraction (see the module).
        axis: the partially acquired axis.
        iterations: number of projection pairs.
        axes: the image axes to transform (``axis`` among them).
        device: where to compute.

    Returns:
        complex images, the shape of ``kspace``, image domain along ``axes``.

    References:
        Haacke EM, Lindskog ED, Lin W. A fast, iterative, partial-Fourier technique capable of local phase
        recovery. JMR 1991;92:126-145.
    """
    if iterations < 0:
        raise UsageError(f"POCS iterations must be >= 0, got {iterations}")
    data, lines, axis, axes = _prepare(kspace, mask, axis, axes, device)
    phase = _phase(data, lines, axis, axes)
    measured = _along(lines, axis, data.ndim, data)
    image = centered_ifft_torch(data, axes)
    for _ in range(iterations):
        estimate = centered_fft_torch(image.abs() * phase, axes)
        image = centered_ifft_torch(torch.where(measured, data, estimate), axes)
    return like_input(image, kspace)
