"""Zero-filled inverse FFT with readout-oversampling removal and root-sum-of-squares coil combination.

References:
    Roemer PB et al. The NMR phased array. MRM 1990;16:192-225 (root-sum-of-squares combination).
"""

from __future__ import annotations

import numpy as np
import torch

from cloudmri_kernel.mrd.header import Header
from cloudmri_kernel.mrd.kspace import SortedKSpace


def centered_ifft(kspace: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Inverse FFT with the k-space centre at index N//2 and the image centre at N//2 (orthonormal)."""
    shifted = np.fft.ifftshift(kspace, axes=axes)
    return np.fft.fftshift(np.fft.ifftn(shifted, axes=axes, norm="ortho"), axes=axes)


def centered_fft(image: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Forward counterpart of :func:`centered_ifft`."""
    shifted = np.fft.ifftshift(image, axes=axes)
    return np.fft.fftshift(np.fft.fftn(shifted, axes=axes, norm="ortho"), axes=axes)


def centered_ifft_torch(kspace: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """Torch twin of :func:`centered_ifft` (orthonormal, centre at N//2), on the tensor's device."""
    shifted = torch.fft.ifftshift(kspace, dim=dim)
    return torch.fft.fftshift(torch.fft.ifftn(shifted, dim=dim, norm="ortho"), dim=dim)


def centered_fft_torch(image: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """Torch twin of :func:`centered_fft`."""
    shifted = torch.fft.ifftshift(image, dim=dim)
    return torch.fft.fftshift(torch.fft.fftn(shifted, dim=dim, norm="ortho"), dim=dim)


def crop_center(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Keep the central ``size`` entries along ``axis`` (removes readout oversampling)."""
    n = values.shape[axis]
    if size >= n:
        return values
    start = n // 2 - size // 2
    return np.take(values, np.arange(start, start + size), axis=axis)


def reconstruct_ifft(kspace: SortedKSpace, header: Header) -> np.ndarray:
    """Zero-filled reconstruction: coil images by inverse FFT, cropped to the recon matrix, combined by RSS.

    Returns:
        float32 magnitude with the axes of ``kspace.dims`` without ``coil``: (..., z, y, x).
    """
    recon = header.encoding[0].reconSpace.matrixSize
    coil_axis = kspace.axis("coil")
    three_d = kspace.kspace.shape[kspace.axis("kz")] > 1
    axes = (-3, -2, -1) if three_d else (-2, -1)
    images = centered_ifft(kspace.kspace, axes)
    images = crop_center(images, int(recon.x), axis=-1)
    images = crop_center(images, int(recon.y), axis=-2)
    return np.sqrt((np.abs(images) ** 2).sum(axis=coil_axis)).astype(np.float32)
