"""Coil combination, noise prewhitening and coil-sensitivity estimation.

Arrays put the coil axis first: coil images and maps are (coils, ny, nx), calibration k-space is
(coils, ny_cal, nx_cal), noise scans are (coils, samples). Every function takes NumPy arrays or torch tensors and
returns the same kind; the work runs in torch on ``device`` (None: where a tensor already is, the CPU for NumPy
input), so the same code runs on a GPU.

Phase convention: estimated maps (:func:`adaptive_combine`, :func:`espirit_maps`, :func:`lowres_maps`) are
phase-referenced to a *virtual* coil, the first principal component of all coils (Inati 2013): a reference
that sees signal everywhere in the object, so the maps have no phase singularities where one real coil is
weak, and the combined image :math:`\\sum_c \\bar S_c I_c` keeps the object's own phase up to a smooth offset.
The maps are normalized to :math:`\\sum_c |S_c|^2 = 1` inside the object, as the phantom's ``csm``.

References:
    Roemer PB et al. The NMR phased array. MRM 1990;16:192-225.
    Walsh DO, Gmitro AF, Marcellin MW. Adaptive reconstruction of phased array MR imagery. MRM 2000;43:682-690.
    Inati SJ, Hansen MS, Kellman P. A solution to the phase problem in adaptive coil combination.
    Proc. ISMRM 2013;21:2672.
"""

from __future__ import annotations

import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.recon.fft import centered_ifft_torch
from cloudmri_kernel.recon.tensors import ArrayLike, like_input, to_tensor


def _complex(values: torch.Tensor) -> torch.Tensor:
    """Complex view of the values: complex input keeps its precision, real input becomes complex64."""
    return values if values.is_complex() else values.to(torch.complex64)


def rss(coil_images: ArrayLike, axis: int = 0) -> ArrayLike:
    """Root-sum-of-squares coil combination.

    .. math::

        m(r) = \\sqrt{\\sum_c |I_c(r)|^2}

    Args:
        coil_images: complex or real coil images, coils along ``axis``.
        axis: the coil axis.

    Returns:
        Real magnitude without the coil axis.

    References:
        Roemer PB et al. The NMR phased array. MRM 1990;16:192-225.
    """
    values = to_tensor(coil_images)
    return like_input(torch.sqrt((values.abs() ** 2).sum(dim=axis)), coil_images)


def _virtual_coil(samples: torch.Tensor) -> torch.Tensor:
    """First principal component (coils,) of (coils, n) samples: the coil combination with the most signal."""
    covariance = samples @ samples.conj().T
    return torch.linalg.eigh(covariance.to(torch.complex128))[1][:, -1].to(samples.dtype)


def _align_phase(vectors: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Rotate each (…, coils) vector so that its projection on the reference coil weights is real and >= 0."""
    projection = (reference.conj() * vectors).sum(dim=-1, keepdim=True)
    magnitude = projection.abs()
    phase = torch.where(magnitude > 0, projection.conj() / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny),
                        torch.ones_like(projection))
    return vectors * phase


def _box_filter(values: torch.Tensor, size: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Sum over a ``size``-wide window centred on each sample along ``dims`` (zeros outside), via cumulative sums."""
    before, after = size // 2, size - 1 - size // 2
    for dim in dims:
        n = values.shape[dim]
        pad_shape = list(values.shape)
        pad_shape[dim] = 1
        zero = torch.zeros(pad_shape, dtype=values.dtype, device=values.device)
        total = torch.cat([zero, torch.cumsum(values, dim=dim)], dim=dim)  # total[i] = sum of values[:i]
        hi = torch.arange(n, device=values.device).add(after + 1).clamp(max=n)
        lo = torch.arange(n, device=values.device).sub(before).clamp(min=0)
        values = total.index_select(dim, hi) - total.index_select(dim, lo)
    return values


def adaptive_combine(coil_images: ArrayLike, kernel: int = 7,
                     device: str | torch.device | None = None) -> tuple[ArrayLike, ArrayLike]:
    """Adaptive (matched-filter) coil combination with sensitivities from the local coil covariance.

    At each pixel the signal covariance is estimated over a ``kernel``-wide neighbourhood :math:`N(r)`,

    .. math::

        R(r) = \\sum_{r' \\in N(r)} I(r') I(r')^H \\in \\mathbb{C}^{C \\times C},

    its dominant eigenvector :math:`v(r)` (unit norm) is the coil sensitivity up to a phase (Walsh 2000), the
    phase is fixed against a virtual reference coil (Inati 2013), and the combined image is the matched
    filter :math:`m(r) = v(r)^H I(r)`, which is SNR-optimal for white noise (prewhiten first,
    :func:`prewhiten`).

    Args:
        coil_images: complex (coils, *spatial), 2D or 3D.
        kernel: width of the neighbourhood in pixels along every spatial axis.
        device: where to compute.

    Returns:
        ``(combined, maps)``: the complex combined image (*spatial) and the estimated sensitivities
        (coils, *spatial) with unit norm across coils.

    Memory grows as coils² × pixels (one C×C matrix per pixel).

    References:
        Walsh DO, Gmitro AF, Marcellin MW. Adaptive reconstruction of phased array MR imagery.
        MRM 2000;43:682-690.
        Inati SJ, Hansen MS, Kellman P. A solution to the phase problem in adaptive coil combination.
        Proc. ISMRM 2013;21:2672.
    """
    if kernel < 1:
        raise UsageError(f"adaptive_combine kernel must be at least 1 pixel, got {kernel}")
    images = _complex(to_tensor(coil_images, device))
    if images.ndim < 3:
        raise UsageError(f"adaptive_combine needs coil images (coils, ny, nx[, ...]), got shape {tuple(images.shape)}")
    coils, spatial = images.shape[0], images.shape[1:]
    flat = images.reshape(coils, -1)
    covariance = images[:, None] * images[None].conj()  # (C, C, *spatial): R[c, d] = I_c conj(I_d)
    covariance = _box_filter(covariance, kernel, tuple(range(2, 2 + len(spatial))))
    covariance = covariance.reshape(coils, coils, -1).permute(2, 0, 1)
    vectors = torch.linalg.eigh(covariance)[1][..., -1]  # (pixels, C), dominant eigenvector
    vectors = _align_phase(vectors, _virtual_coil(flat))
    combined = (vectors.conj() * flat.T).sum(dim=-1)
    maps = vectors.T.reshape(coils, *spatial)
    return like_input(combined.reshape(spatial), coil_images), like_input(maps.contiguous(), coil_images)


def noise_covariance(noise: ArrayLike) -> ArrayLike:
    """Channel noise covariance from noise scans.

    .. math::

        \\Psi = \\frac{1}{N} \\sum_{n=1}^{N} \\eta_n \\eta_n^H

    with :math:`\\eta_n` the coil vector of noise sample n (noise is zero-mean, so no mean is subtracted).

    Args:
        noise: complex (coils, samples...) from acquisitions flagged ``IS_NOISE_MEASUREMENT``
            (``SortedKSpace.noise``).

    Returns:
        Hermitian (coils, coils).

    References:
        Pruessmann KP et al. Advances in sensitivity encoding with arbitrary k-space trajectories.
        MRM 2001;46:638-651.
    """
    values = _complex(to_tensor(noise))
    samples = values.reshape(values.shape[0], -1)
    if samples.shape[1] < samples.shape[0]:
        raise InvalidDataError(f"{samples.shape[1]} noise samples cannot estimate the covariance of "
                               f"{samples.shape[0]} coils: the noise scan is too short or its axes are swapped "
                               f"(expected (coils, samples))")
    return like_input((samples @ samples.conj().T) / samples.shape[1], noise)


def whitening_matrix(covariance: ArrayLike) -> ArrayLike:
    """The matrix W that decorrelates coils with noise covariance Ψ: :math:`W \\Psi W^H = I`.

    .. math::

        \\Psi = L L^H \\ \\text{(Cholesky)}, \\qquad W = L^{-1}

    W is lower triangular, so whitened coil c mixes coils 0..c only.

    Args:
        covariance: Hermitian positive definite (coils, coils), e.g. from :func:`noise_covariance`.

    Returns:
        (coils, coils).

    References:
        Pruessmann KP et al. Advances in sensitivity encoding with arbitrary k-space trajectories.
        MRM 2001;46:638-651.
        Hansen MS, Kellman P. Image reconstruction: an update for clinicians. JMRI 2015;41:573-585.
    """
    psi = _complex(to_tensor(covariance))
    if psi.ndim != 2 or psi.shape[0] != psi.shape[1]:
        raise UsageError(f"a noise covariance is a square (coils, coils) matrix, got shape {tuple(psi.shape)}")
    factor, info = torch.linalg.cholesky_ex(psi.to(torch.complex128))
    if int(info) != 0:
        raise InvalidDataError("the noise covariance is not positive definite (a dead or duplicated channel, or "
                               "fewer noise samples than coils): check the noise scans or skip prewhitening")
    identity = torch.eye(psi.shape[0], dtype=factor.dtype, device=factor.device)
    inverse = torch.linalg.solve_triangular(factor, identity, upper=False)
    return like_input(inverse.to(psi.dtype), covariance)


def prewhiten(kspace: ArrayLike, covariance: ArrayLike, coil_axis: int = 0,
              device: str | torch.device | None = None) -> ArrayLike:
    """Decorrelate coils and give them unit noise variance: :math:`\\tilde y = W y`, :math:`W = L^{-1}`.

    After whitening the noise covariance is the identity, which the SNR-optimal combinations (Roemer, SENSE,
    adaptive) assume.

    Args:
        kspace: complex data with coils along ``coil_axis`` (k-space or coil images: W acts on the coil axis only).
        covariance: (coils, coils) noise covariance, e.g. from :func:`noise_covariance`.
        coil_axis: the coil axis of ``kspace``.
        device: where to compute.

    Returns:
        The whitened data, same shape and kind as ``kspace``.

    References:
        Pruessmann KP et al. Advances in sensitivity encoding with arbitrary k-space trajectories.
        MRM 2001;46:638-651.
        Hansen MS, Kellman P. Image reconstruction: an update for clinicians. JMRI 2015;41:573-585.
    """
    data = _complex(to_tensor(kspace, device))
    whitening = to_tensor(whitening_matrix(to_tensor(covariance)), data.device).to(data.dtype)
    if data.shape[coil_axis] != whitening.shape[0]:
        raise UsageError(f"the data have {data.shape[coil_axis]} coils along axis {coil_axis} but the noise "
                         f"covariance is for {whitening.shape[0]}: pass the coil axis (coil_axis=...)")
    moved = torch.movedim(data, coil_axis, -1)
    whitened = torch.movedim(moved @ whitening.T, -1, coil_axis)
    return like_input(whitened.contiguous(), kspace)


def _calibration_matrix(calibration: torch.Tensor, kernel: int) -> torch.Tensor:
    """Rows: every kernel×kernel patch of the calibration data, flattened as (coil, ky, kx)."""
    coils = calibration.shape[0]
    patches = calibration.unfold(1, kernel, 1).unfold(2, kernel, 1)  # (C, by, bx, k, k)
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, coils * kernel * kernel)


#: Pixels per batched eigendecomposition. cuSOLVER's batched Hermitian solver fails on large batches (an internal
#: error for 65536 16×16 matrices, a 182 GiB workspace request for 262144 32×32 ones, seen on an H100); chunks
#: of this size keep its workspace small on every device and cost nothing measurable on the CPU.
EIGH_CHUNK = 8192


def _largest_eigenpairs(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(largest eigenvalue (n, 1), its eigenvector (n, c)) of each Hermitian (c, c) matrix of (n, c, c)."""
    values, vectors = [], []
    for chunk in matrices.split(EIGH_CHUNK):
        chunk_values, chunk_vectors = torch.linalg.eigh(chunk)
        values.append(chunk_values[..., -1:])
        vectors.append(chunk_vectors[..., -1])
    return torch.cat(values), torch.cat(vectors)


def espirit_maps(calibration: ArrayLike, image_shape: tuple[int, int], kernel: int = 6, threshold: float = 0.02,
                 crop: float = 0.95, readout_width: int | None = None,
                 device: str | torch.device | None = None) -> ArrayLike:
    """Coil sensitivities by ESPIRiT: the eigenvalue-1 eigenvector of the calibration's image-domain operator.

    The calibration matrix A holds every ``kernel``×``kernel`` k-space patch of the calibration data as a row.
    Its right singular vectors with :math:`\\sigma > \\text{threshold}\\,\\sigma_{max}` span the signal
    subspace; as convolution kernels :math:`v_k`, transformed to the image domain
    (:math:`g_k(r) = \\mathcal{F}^{-1}\\{v_k\\}(r)`, a coil vector per pixel), they give at each pixel

    .. math::

        G(r) = \\frac{N}{K^2} \\sum_k g_k(r)\\, g_k(r)^H, \\qquad G(r)\\, S(r) = S(r),

    and the maps are the eigenvectors with eigenvalue one; pixels whose largest eigenvalue is below ``crop``
    (no signal) are set to zero. G is computed from the kernels' cross-correlations, which have only
    (2K-1)² samples, with one FFT per coil pair, and diagonalized per pixel. One set of maps.

    Args:
        calibration: complex (coils, ny_cal, nx_cal), the fully sampled centre of k-space (ACS lines).
        image_shape: (ny, nx) of the maps; the same k-space sampling as the calibration (same FOV).
        kernel: kernel width K in k-space samples.
        threshold: singular values kept, relative to the largest.
        crop: eigenvalue below which a pixel's maps are zero (0 keeps every pixel).
        readout_width: central readout samples of the calibration used; None: as many as calibration lines,
            a square region as in BART's ``ecalib`` and sigpy's ``calib_width``. Noise-only outer readout
            samples would raise the noise floor of the singular values above the threshold.
        device: where to compute.

    Returns:
        complex (coils, ny, nx), phase-referenced to the virtual coil (see the module).

    References:
        Uecker M, Lai P, Murphy MJ, Virtue P, Elad M, Pauly JM, Vasanawala SS, Lustig M. ESPIRiT - an
        eigenvalue approach to autocalibrating parallel MRI: where SENSE meets GRAPPA. MRM 2014;71:990-1001.
    """
    data = _complex(to_tensor(calibration, device))
    if data.ndim != 3:
        raise UsageError(f"espirit_maps needs calibration k-space (coils, ny_cal, nx_cal), got {tuple(data.shape)}")
    coils, lines, samples = data.shape
    width = min(samples, lines if readout_width is None else readout_width)
    start = samples // 2 - width // 2
    data = data[:, :, start:start + width]
    if min(lines, width) < kernel:
        raise InvalidDataError(f"the calibration region ({lines}×{width}) is smaller than the ESPIRiT kernel "
                               f"({kernel}): acquire more calibration lines or pass a smaller kernel")
    ny, nx = image_shape
    matrix = _calibration_matrix(data, kernel)
    gram = (matrix.conj().T @ matrix).to(torch.complex128)
    eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending; sigma^2 and right singular vectors
    keep = eigenvalues > (threshold**2) * eigenvalues[-1]
    # Patches are rows of A = U S V^H, so they lie in the span of conj(V): those are the kernels.
    kernels = vectors[:, keep].conj().T.reshape(-1, coils, kernel, kernel).to(data.dtype)

    size = 2 * kernel - 1
    spectra = torch.fft.fft2(kernels, s=(size, size))  # (K, C, size, size)
    correlation = torch.fft.ifft2(torch.einsum("kcuv,kduv->cduv", spectra, spectra.conj()))
    shifts = torch.arange(-(kernel - 1), kernel, device=data.device)
    padded = torch.zeros((coils, coils, ny, nx), dtype=data.dtype, device=data.device)
    rows, cols = (shifts % ny)[:, None], (shifts % nx)[None, :]
    padded[:, :, rows, cols] = correlation[:, :, (shifts % size)[:, None], (shifts % size)[None, :]]
    operator = torch.fft.fftshift(torch.fft.ifft2(padded, norm="forward"), dim=(-2, -1)) / kernel**2
    operator = operator.reshape(coils, coils, -1).permute(2, 0, 1)
    operator = (operator + operator.conj().transpose(-1, -2)) / 2
    values, vectors = _largest_eigenpairs(operator)
    maps = vectors * (values > crop)
    maps = _align_phase(maps, _virtual_coil(data.reshape(coils, -1)))
    return like_input(maps.T.reshape(coils, ny, nx).contiguous(), calibration)


def _hann(n: int, device: torch.device) -> torch.Tensor:
    """Symmetric Hann window of length n that is positive at every sample."""
    return torch.sin(torch.pi * (torch.arange(n, device=device) + 0.5) / n) ** 2


def lowres_maps(kspace_center: ArrayLike, image_shape: tuple[int, int], threshold: float = 0.05,
                device: str | torch.device | None = None) -> ArrayLike:
    """Coil sensitivities as low-resolution coil images divided by their root-sum-of-squares.

    The calibration centre, Hann-windowed (isotropic resolution in pixels) and zero-padded to the image, gives
    low-resolution coil images :math:`L_c`; since the object is common to all coils,

    .. math::

        S_c(r) = \\frac{L_c(r)}{\\sqrt{\\sum_{c'} |L_{c'}(r)|^2}}\\; e^{-i \\angle L_v(r)}\\; w(r),

    with :math:`L_v` the virtual reference coil (removes the object phase) and w a smooth mask rising from 0 to 1
    as the low-resolution RSS goes from ``threshold/2`` to ``threshold`` of its maximum. Fast (two FFTs per coil),
    but less accurate than :func:`espirit_maps` at edges and where the object has structure at the
    calibration's resolution.

    Args:
        kspace_center: complex (coils, ny_cal, nx_cal), the fully sampled centre of k-space.
        image_shape: (ny, nx) of the maps, same k-space sampling as the calibration.
        threshold: where the mask reaches one, relative to the largest low-resolution RSS.
        device: where to compute.

    Returns:
        complex (coils, ny, nx).

    References:
        McKenzie CA, Yeh EN, Ohliger MA, Price MD, Sodickson DK. Self-calibrating parallel imaging with
        automatic coil sensitivity extraction. MRM 2002;47:529-538.
    """
    data = _complex(to_tensor(kspace_center, device))
    if data.ndim != 3:
        raise UsageError(f"lowres_maps needs centre k-space (coils, ny_cal, nx_cal), got {tuple(data.shape)}")
    coils, lines, samples = data.shape
    ny, nx = image_shape
    if lines > ny or samples > nx:
        raise UsageError(f"the calibration ({lines}×{samples}) is larger than the image ({ny}×{nx})")
    width = min(samples, max(1, round(lines * nx / ny)))
    start = samples // 2 - width // 2
    window = _hann(lines, data.device)[:, None] * _hann(width, data.device)[None, :]
    padded = torch.zeros((coils, ny, nx), dtype=data.dtype, device=data.device)
    y0, x0 = ny // 2 - lines // 2, nx // 2 - width // 2
    padded[:, y0:y0 + lines, x0:x0 + width] = data[:, :, start:start + width] * window
    images = centered_ifft_torch(padded, dim=(-2, -1))
    magnitude = torch.sqrt((images.abs() ** 2).sum(dim=0))
    relative = magnitude / magnitude.max().clamp_min(torch.finfo(magnitude.dtype).tiny)
    ramp = ((relative - threshold / 2) / (threshold / 2)).clamp(0, 1)
    mask = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no edge where the maps are cut
    maps = images / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny) * mask
    flat = _align_phase(maps.reshape(coils, -1).T, _virtual_coil(data.reshape(coils, -1)))
    return like_input(flat.T.reshape(coils, ny, nx).contiguous(), kspace_center)
