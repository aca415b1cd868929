"""Linear forward models of MRI on torch tensors, composable like sigpy's ``Linop``.

An operator maps tensors of shape ``ishape`` to tensors of shape ``oshape``; ``A(x)`` applies it, ``A.H`` is its
adjoint and ``A * B`` their composition (``(A * B)(x) == A(B(x))``; ``*`` as in sigpy, so a forward model reads
like its formula). ``A.normal()`` is :math:`A^H A`; operators whose normal form is cheaper than the composition
(the Cartesian SENSE model, the NUFFT by Toeplitz embedding) return that cheaper form, which the solvers use.
Every operator is tested for adjoint consistency, :math:`\\langle Ax, y\\rangle = \\langle x, A^H y\\rangle`.

Conventions:
    * Complex data are ``torch.complex64``; operators keep their tensors on the device they were built on.
    * Images are (..., y, x); k-space is centred like :func:`cloudmri_kernel.recon.fft.centered_fft` (DC at
      index N//2) and unitary, which is what the phantom simulator writes.
    * Non-Cartesian trajectories follow MRD: (points, 2) columns (kx, ky) in cycles/pixel within [-0.5, 0.5).

References:
    Ong F, Lustig M. SigPy: a python package for high performance iterative reconstruction. ISMRM 2019:4819.
    Pruessmann KP et al. SENSE: sensitivity encoding for fast MRI. MRM 1999;42:952-962.
    Fessler JA, Sutton BP. Nonuniform fast Fourier transforms using min-max interpolation.
    IEEE TSP 2003;51:560-574.
    Muckley MJ et al. TorchKbNufft: a high-level, hardware-agnostic non-uniform fast Fourier transform.
    ISMRM Workshop on Data Sampling and Image Reconstruction 2020.
    Fessler JA et al. Toeplitz-based iterative image reconstruction for MRI with correction for magnetic field
    inhomogeneity. IEEE TSP 2005;53:3393-3402.
    Pipe JG, Menon P. Sampling density compensation in MRI: rationale and an iterative numerical solution.
    MRM 1999;41:179-186.
    Mallat S. A theory for multiresolution signal decomposition: the wavelet representation.
    IEEE TPAMI 1989;11:674-693.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pywt
import torch
import torch.nn.functional as F
import torchkbnufft as tkbn

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.recon.fft import centered_fft, centered_fft_torch, centered_ifft, centered_ifft_torch, crop_center
from cloudmri_kernel.recon.tensors import to_tensor

#: Interpolation table oversampling of the Kaiser-Bessel NUFFT. torchkbnufft's default (2**10) leaves ~9e-4
#: relative error against the exact DFT; 2**12 brings it to ~2e-4 at no cost per transform (building the table
#: takes ~0.05 s more; 2**14 would reach 5e-5 for ~0.1 s).
NUFFT_TABLE_OVERSAMPLING = 2**12

Shape = tuple[int, ...]


def _shape(shape: Sequence[int]) -> Shape:
    return tuple(int(n) for n in shape)


class Linop:
    """A linear operator :math:`A` from tensors of shape ``ishape`` to tensors of shape ``oshape``.

    Subclasses implement ``_forward`` and ``_adjoint``; the public methods check shapes. ``A * B`` composes
    (apply B, then A) and ``A.H`` is the adjoint operator.
    """

    def __init__(self, oshape: Sequence[int], ishape: Sequence[int]):
        self.oshape = _shape(oshape)
        self.ishape = _shape(ishape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`A x`."""
        if tuple(x.shape) != self.ishape:
            raise ValueError(f"{self!r} expects input of shape {self.ishape}, got {tuple(x.shape)}")
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`A^H y`."""
        if tuple(y.shape) != self.oshape:
            raise ValueError(f"{self!r} adjoint expects input of shape {self.oshape}, got {tuple(y.shape)}")
        return self._adjoint(y)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> Linop:  # noqa: N802 (the mathematical name, as in sigpy)
        """The adjoint operator :math:`A^H`."""
        return Adjoint(self)

    def normal(self) -> Linop:
        """:math:`A^H A`, an operator from ``ishape`` to ``ishape``."""
        return Compose([self.H, self])

    def __mul__(self, other: Linop) -> Linop:
        if not isinstance(other, Linop):
            return NotImplemented
        return Compose([self, other])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ishape} -> {self.oshape}>"


class Identity(Linop):
    """:math:`I`."""

    def __init__(self, shape: Sequence[int]):
        super().__init__(shape, shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def normal(self) -> Linop:
        return self


class Adjoint(Linop):
    """The adjoint of an operator, as an operator."""

    def __init__(self, op: Linop):
        super().__init__(op.ishape, op.oshape)
        self.op = op

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> Linop:  # noqa: N802
        return self.op


class Compose(Linop):
    """:math:`A_1 A_2 \\cdots A_n`: ``ops[-1]`` is applied first."""

    def __init__(self, ops: Sequence[Linop]):
        flat: list[Linop] = []
        for op in ops:
            flat.extend(op.ops if type(op) is Compose else [op])
        for outer, inner in zip(flat, flat[1:], strict=False):
            if outer.ishape != inner.oshape:
                raise ValueError(f"cannot compose {outer!r} with {inner!r}: shapes {outer.ishape} and "
                                 f"{inner.oshape} differ")
        super().__init__(flat[0].oshape, flat[-1].ishape)
        self.ops = flat

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.ops):
            x = op.forward(x)
        return x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            y = op.adjoint(y)
        return y

    def normal(self) -> Linop:
        # (A B)^H (A B) = B^H (A^H A) B, so an outer operator's cheap normal form (Toeplitz NUFFT) is used.
        inner = self.ops[-1]
        outer = self.ops[0] if len(self.ops) == 2 else Compose(self.ops[:-1])
        return Compose([inner.H, outer.normal(), inner])


class Multiply(Linop):
    """Pointwise multiplication by ``weights`` broadcast to ``shape``; the adjoint multiplies by the conjugate."""

    def __init__(self, weights, shape: Sequence[int], device: str | torch.device | None = None):
        super().__init__(shape, shape)
        weights = torch.as_tensor(weights)
        dtype = torch.complex64 if weights.is_complex() else torch.float32
        self.weights = to_tensor(weights, device, dtype)
        try:
            torch.broadcast_shapes(self.weights.shape, self.ishape)
        except RuntimeError as error:
            raise ValueError(f"weights of shape {tuple(self.weights.shape)} do not broadcast to {self.ishape}") \
                from error

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.weights.conj()

    def normal(self) -> Linop:
        return Multiply(self.weights.abs() ** 2, self.ishape)


class Mask(Multiply):
    """Sampling: keeps the acquired k-space samples, zeroes the rest.

    Args:
        mask: bool (or real weights) broadcastable to ``shape`` by torch's rules, e.g. (ky, kx) or (ky, 1)
            for k-space of shape (coils, ky, kx).
        shape: the k-space shape; default ``mask.shape``.
    """

    def __init__(self, mask, shape: Sequence[int] | None = None, device: str | torch.device | None = None):
        mask = torch.as_tensor(mask)
        super().__init__(mask.to(torch.float32), mask.shape if shape is None else shape, device)


class FFT(Linop):
    """Centred orthonormal FFT over ``axes``: ifftshift, ``fftn(norm="ortho")``, fftshift.

    The same transform as :func:`cloudmri_kernel.recon.fft.centered_fft`; unitary, so the adjoint is the inverse.
    """

    def __init__(self, shape: Sequence[int], axes: Sequence[int] = (-2, -1)):
        super().__init__(shape, shape)
        self.axes = tuple(int(a) for a in axes)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return centered_fft_torch(x, self.axes)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return centered_ifft_torch(y, self.axes)

    def normal(self) -> Linop:
        return Identity(self.ishape)


class CoilSensitivity(Linop):
    """Coil images from one image: :math:`(Sx)_c = S_c \\odot x`; the adjoint is :math:`\\sum_c \\bar S_c y_c`.

    Args:
        maps: complex (coils, y, x) sensitivities.
    """

    def __init__(self, maps, device: str | torch.device | None = None):
        self.maps = to_tensor(maps, device, torch.complex64)
        if self.maps.ndim != 3:
            raise ValueError(f"coil maps must be (coils, y, x), got shape {tuple(self.maps.shape)}")
        super().__init__(self.maps.shape, self.maps.shape[1:])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps * x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(self.maps, y, dim=0)


class SenseOperator(Compose):
    """The Cartesian multi-coil forward model :math:`A = M F S` (Mask * FFT * CoilSensitivity).

    .. math::

        A^H A\\, x = \\sum_c \\bar S_c\\, F^H |M|^2 F (S_c x)

    :meth:`normal` returns this product fused: one batched FFT pair over the coils, shifts folded into the maps
    and the mask. When the mask is constant along kx (phase-encoding undersampling, the usual case) the FFT
    along x cancels and only the FFT along y is done, on data transposed so that y is contiguous.

    Args:
        maps: complex (coils, y, x).
        mask: sampling mask broadcastable to (coils, y, x): (y, x) or (y, 1).

    References:
        Pruessmann KP et al. SENSE: sensitivity encoding for fast MRI. MRM 1999;42:952-962.
    """

    def __init__(self, maps, mask, device: str | torch.device | None = None):
        sense = CoilSensitivity(maps, device)
        mask = to_tensor(mask, sense.maps.device, torch.float32)
        if mask.ndim == 2 and mask.shape[-1] > 1 and bool((mask == mask[:, :1]).all()):
            mask = mask[:, :1].contiguous()
        super().__init__([Mask(mask, sense.oshape), FFT(sense.oshape, (-2, -1)), sense])
        self.maps = sense.maps
        self.mask = mask

    def normal(self) -> Linop:
        return _SenseNormal(self.maps, self.mask)


class _SenseNormal(Linop):
    """:math:`\\sum_c \\bar S_c F_c^H |M|^2 F_c S_c`, fused (see :class:`SenseOperator`).

    With :math:`F_c` = fftshift F ifftshift, :math:`S^H F_c^H W F_c S = \\mathrm{fftshift}\\, S'^H F^H W' F S'
    \\mathrm{ifftshift}` where :math:`S'` and :math:`W'` are the maps and weights ifftshifted once here.
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        super().__init__(maps.shape[1:], maps.shape[1:])
        weights = mask.abs() ** 2
        self._separable = weights.shape[-1] == 1
        if self._separable:
            self._dims: tuple[int, ...] = (0,)
            self._maps = torch.fft.ifftshift(maps, dim=-2).transpose(-1, -2).contiguous()
            self._weights = torch.fft.ifftshift(weights[:, 0]).reshape(1, 1, -1)
        else:
            self._dims = (0, 1)
            self._maps = torch.fft.ifftshift(maps, dim=(-2, -1))
            self._weights = torch.fft.ifftshift(torch.broadcast_to(weights, self.ishape), dim=(-2, -1))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = torch.fft.ifftshift(x, dim=self._dims)
        if self._separable:
            coils = self._maps * shifted.T.contiguous()
            kspace = torch.fft.fft(coils, dim=-1, norm="ortho")
            kspace.mul_(self._weights)
            coils = torch.fft.ifft(kspace, dim=-1, norm="ortho")
            combined = torch.linalg.vecdot(self._maps, coils, dim=0).T
        else:
            kspace = torch.fft.fft2(self._maps * shifted, norm="ortho")
            kspace.mul_(self._weights)
            combined = torch.linalg.vecdot(self._maps, torch.fft.ifft2(kspace, norm="ortho"), dim=0)
        return torch.fft.fftshift(combined, dim=self._dims).contiguous()

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._forward(y)

    def normal(self) -> Linop:
        return Compose([self, self])


def _omega(traj, device: str | torch.device | None) -> torch.Tensor:
    """MRD (points, 2) (kx, ky) in cycles/pixel -> torchkbnufft's (2, points) (ky, kx) in radians/pixel."""
    traj = to_tensor(traj, device, torch.float32)
    if traj.ndim != 2 or traj.shape[1] != 2:
        raise ValueError(f"trajectory must be (points, 2) with columns (kx, ky), got shape {tuple(traj.shape)}")
    return 2 * math.pi * traj[:, [1, 0]].T.contiguous()


class NUFFT(Linop):
    """Non-uniform DFT of 2D images at trajectory points, unitary-scaled like the Cartesian FFT.

    .. math::

        (Ax)_j = \\frac{\\sqrt{w_j}}{\\sqrt{N_y N_x}} \\sum_{r} x_r\\, e^{-2\\pi i\\, k_j \\cdot r}

    with r in pixels from the image centre (N//2) and k in cycles/pixel, so samples at the Cartesian grid points
    reproduce the centred orthonormal FFT, and the phantom simulator's data are :math:`A` of its coil images.
    Computed by torchkbnufft (Kaiser-Bessel gridding, 2x grid, 6-point kernel). Leading dimensions of
    ``image_shape`` (e.g. coils) are a batch sharing the trajectory.

    Args:
        traj: (points, 2), columns (kx, ky), cycles/pixel within [-0.5, 0.5) (MRD convention).
        image_shape: (..., y, x).
        dcf: optional (points,) density compensation w; applied as :math:`\\sqrt{w}` on both sides, so
            :math:`A^H A` is the density-weighted normal operator and the adjoint stays exact.

    References:
        Fessler JA, Sutton BP. IEEE TSP 2003;51:560-574. Muckley MJ et al. TorchKbNufft, 2020.
    """

    def __init__(self, traj, image_shape: Sequence[int], dcf=None, device: str | torch.device | None = None):
        image_shape = _shape(image_shape)
        if len(image_shape) < 2:
            raise ValueError(f"image shape must be (..., y, x), got {image_shape}")
        self.omega = _omega(traj, device)
        device = self.omega.device
        points = self.omega.shape[1]
        super().__init__((*image_shape[:-2], points), image_shape)
        self.im_size = image_shape[-2:]
        self._scale = 1.0 / math.sqrt(self.im_size[0] * self.im_size[1])
        self.dcf = None if dcf is None else to_tensor(dcf, device, torch.float32).reshape(points)
        self._sqrt_dcf = None if self.dcf is None else self.dcf.sqrt()
        options = {"im_size": self.im_size, "table_oversamp": NUFFT_TABLE_OVERSAMPLING}
        self._forward_nufft = tkbn.KbNufft(**options).to(device)
        self._adjoint_nufft = tkbn.KbNufftAdjoint(**options).to(device)
        self._batch = math.prod(image_shape[:-2])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(1, self._batch, *self.im_size)
        y = self._forward_nufft(images, self.omega).reshape(self.oshape) * self._scale
        return y if self._sqrt_dcf is None else y * self._sqrt_dcf

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self._sqrt_dcf is not None:
            y = y * self._sqrt_dcf
        samples = y.reshape(1, self._batch, -1)
        return self._adjoint_nufft(samples, self.omega).reshape(self.ishape) * self._scale

    def normal(self) -> Linop:
        return ToeplitzNormal(self)


class ToeplitzNormal(Linop):
    """:math:`A^H W A` of a :class:`NUFFT` by Toeplitz embedding: one zero-padded FFT pair, no interpolation.

    References:
        Fessler JA et al. IEEE TSP 2005;53:3393-3402.
    """

    def __init__(self, nufft: NUFFT):
        super().__init__(nufft.ishape, nufft.ishape)
        weights = None if nufft.dcf is None else nufft.dcf.to(torch.complex64).reshape(1, -1)
        kernel = tkbn.calc_toeplitz_kernel(nufft.omega, nufft.im_size, weights=weights,
                                           table_oversamp=NUFFT_TABLE_OVERSAMPLING)
        # Unnormalized kernel is N^2 times the unitary-scaled normal operator.
        self.kernel = kernel * (nufft._scale**2)
        self._toeplitz = tkbn.ToepNufft().to(kernel.device)
        self._batch, self._im_size = nufft._batch, nufft.im_size

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(1, self._batch, *self._im_size)
        return self._toeplitz(images, self.kernel).reshape(self.ishape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._forward(y)


def pipe_menon_dcf(traj, image_shape: Sequence[int], iterations: int = 10,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Density compensation weights by the fixed-point iteration of Pipe & Menon (1999).

    .. math::

        w^{(i+1)} = \\frac{w^{(i)}}{C C^H w^{(i)}}

    with C the Kaiser-Bessel interpolation of :class:`NUFFT` (torchkbnufft's
    ``calc_density_compensation_function``). The weights are scaled so that a fully sampled Cartesian grid gets
    weight 1: they are the inverse sampling density relative to Nyquist, and the gridding reconstruction
    :math:`A^H (w \\odot y)` has the scale of the image.

    Args:
        traj: (points, 2) (kx, ky) in cycles/pixel.
        image_shape: (y, x) of the image (only the last two entries are used).
        iterations: fixed-point iterations; 10-20 suffice for radial and spiral trajectories.

    Returns:
        float32 (points,) on ``device``.

    References:
        Pipe JG, Menon P. Sampling density compensation in MRI: rationale and an iterative numerical solution.
        MRM 1999;41:179-186.
    """
    im_size = _shape(image_shape)[-2:]
    omega = _omega(traj, device)
    # torchkbnufft's default table suffices for weights; the reference below uses the same kernel.
    options = {"im_size": im_size}
    weights = tkbn.calc_density_compensation_function(omega, num_iterations=iterations, **options)
    # One iteration from w = 1 on the Nyquist grid gives 1 / (C C^H 1), the same at every grid point.
    ny, nx = im_size
    grid_y, grid_x = torch.meshgrid(torch.arange(ny) - ny // 2, torch.arange(nx) - nx // 2, indexing="ij")
    cartesian = torch.stack([grid_x.flatten() / nx, grid_y.flatten() / ny], dim=1)
    reference = tkbn.calc_density_compensation_function(_omega(cartesian, omega.device), num_iterations=1,
                                                        **options)
    return (weights.real / reference.real.mean()).reshape(-1).to(torch.float32)


class Wavelet(Linop):
    """Orthonormal 2D discrete wavelet transform of (..., y, x) complex images, periodized.

    Mallat's pyramid with the wavelet's orthogonal filter pair applied circularly (pywt's
    ``mode="periodization"``, whose coefficients it reproduces exactly), so the transform is an orthogonal
    matrix: :math:`\\|Wx\\| = \\|x\\|`, :math:`W^H = W^{-1}`, and the soft-thresholding prox of
    :math:`\\|Wx\\|_1` is exact. Periodic boundaries suit MRI, whose DFT-sampled images are periodic in the
    field of view. Real and imaginary parts are transformed alike. The coefficients are packed into one
    (..., y, x) tensor in the layout of ``pywt.coeffs_to_array``: the approximation in the top-left corner,
    each level's details around it (those of variations along y below, along x to the right, diagonal across).

    Each filtering step is one gather (circular indexing, even/odd polyphase split) and one small conv2d.
    ptwt was measured as the alternative: its convolution transforms are not orthonormal (zero padding adds
    coefficients) and its matrix transform's QR-orthogonalized boundary filters lose the vanishing moments
    (4 % of a signal constant along x leaks into x-details at the borders); this is as fast.

    Args:
        shape: (..., y, x); y and x must be divisible by ``2**level``.
        wavelet: a pywt name of an orthogonal wavelet (``db4``, ``haar``, ``sym8`` ...).
        level: decomposition levels; default as pywt (``dwt_max_level`` for the filter length), as far as
            both sizes stay divisible.
        device: where the filters live; inputs must be on it.

    References:
        Mallat S. A theory for multiresolution signal decomposition: the wavelet representation.
        IEEE TPAMI 1989;11:674-693.
        Daubechies I. Ten lectures on wavelets. SIAM 1992.
    """

    def __init__(self, shape: Sequence[int], wavelet: str = "db4", level: int | None = None,
                 device: str | torch.device | None = None):
        shape = _shape(shape)
        super().__init__(shape, shape)
        if wavelet not in pywt.wavelist(kind="discrete") or not pywt.Wavelet(wavelet).orthogonal:
            raise UsageError(f"wavelet '{wavelet}' is not an orthogonal discrete wavelet: use e.g. db4, haar, sym8")
        ny, nx = shape[-2:]
        filters = pywt.Wavelet(wavelet)
        divisible = min((n & -n).bit_length() - 1 for n in (ny, nx))
        if divisible == 0:
            raise UsageError(f"a periodized wavelet transform needs even image sizes, not {ny} x {nx}: zero-pad "
                             f"the k-space (or crop the image) by one sample")
        if level is None:
            level = min(pywt.dwt_max_level(min(ny, nx), filters.dec_len), divisible)
        if not 1 <= level <= divisible:
            raise UsageError(f"wavelet level {level} does not fit an image of {ny} x {nx}: use 1 to {divisible}")
        self.wavelet, self.level = wavelet, level
        self._device = torch.device("cpu") if device is None else torch.device(device)
        length = filters.dec_len
        self._half, self._shift = length // 2, length // 2 - 1
        # pywt's periodization correlates with the reversed decomposition filters from offset -(L/2 - 1).
        bank = np.stack([filters.dec_lo[::-1], filters.dec_hi[::-1]]).reshape(2, length // 2, 2)
        # analysis[band, parity, i] = f_band[2i + parity]; synthesis[parity, band, t] = f_band[2(L/2-1-t) + parity]
        analysis = torch.tensor(bank.transpose(0, 2, 1).copy(), dtype=torch.float32, device=self._device)
        synthesis = torch.tensor(bank.transpose(2, 0, 1)[:, :, ::-1].copy(), dtype=torch.float32,
                                 device=self._device)
        self._weights = {"analysis": (analysis[..., None], analysis[:, :, None, :]),
                         "synthesis": (synthesis[..., None], synthesis[:, :, None, :])}
        self._indices = {n: self._circular_indices(n) for lv in range(level) for n in (ny >> lv, nx >> lv)}

    def _circular_indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gathers for one axis of length n: analysis input (even then odd phase, circularly extended),
        synthesis input (both bands, circularly extended), synthesis output (phases back to positions)."""
        half, shift, m = self._half, self._shift, n // 2
        k = np.arange(m + half - 1)
        analysis = np.concatenate([(2 * k - shift) % n, (2 * k + 1 - shift) % n])
        extended = np.arange(-(half - 1), m) % m
        position = np.arange(n) + shift
        output = (position % 2) * m + (position // 2) % m
        return tuple(torch.as_tensor(v, device=self._device) for v in
                     (analysis, np.concatenate([extended, m + extended]), output))

    def _filter(self, x: torch.Tensor, axis: int, step: str) -> torch.Tensor:
        """One analysis or synthesis step along axis 1 (y) or 2 (x) of real (batch, h, w)."""
        b, h, w = x.shape
        n = x.shape[axis]
        analysis_in, synthesis_in, synthesis_out = self._indices[n]
        weight = self._weights[step][axis - 1]
        gathered = x.index_select(axis, analysis_in if step == "analysis" else synthesis_in)
        if axis == 1:
            filtered = F.conv2d(gathered.reshape(b, 2, -1, w), weight).reshape(b, h, w)
        else:
            phases = gathered.reshape(b, h, 2, -1).transpose(1, 2)
            filtered = F.conv2d(phases, weight).transpose(1, 2).reshape(b, h, w)
        return filtered if step == "analysis" else filtered.index_select(axis, synthesis_out)

    def _parts(self, x: torch.Tensor) -> torch.Tensor:
        """(2 * batch, y, x) real: the real parts of the batch, then the imaginary parts."""
        flat = torch.view_as_real(x.reshape(-1, *self.ishape[-2:]))
        return flat.movedim(-1, 0).reshape(-1, *self.ishape[-2:]).contiguous()

    def _complex(self, parts: torch.Tensor) -> torch.Tensor:
        half = parts.shape[0] // 2
        return torch.complex(parts[:half], parts[half:]).reshape(self.ishape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._parts(x)
        ny, nx = self.ishape[-2:]
        for lv in range(self.level):
            block = out[:, :ny >> lv, :nx >> lv]
            block.copy_(self._filter(self._filter(block, 2, "analysis"), 1, "analysis"))
        return self._complex(out)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = self._parts(y)
        ny, nx = self.ishape[-2:]
        for lv in reversed(range(self.level)):
            block = out[:, :ny >> lv, :nx >> lv]
            block.copy_(self._filter(self._filter(block, 1, "synthesis"), 2, "synthesis"))
        return self._complex(out)

    def normal(self) -> Linop:
        return Identity(self.ishape)


class FiniteDifference(Linop):
    """Circular forward differences along ``axes``: output (len(axes), ...) with
    :math:`(Dx)_a = x(r + e_a) - x(r)`; the adjoint is the negative backward difference summed over axes.

    Periodic boundaries, as sigpy's ``FiniteDifference``, so the adjoint is exact.
    """

    def __init__(self, shape: Sequence[int], axes: Sequence[int] = (-2, -1)):
        shape = _shape(shape)
        super().__init__((len(axes), *shape), shape)
        self.axes = tuple(int(a) % len(shape) for a in axes)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.roll(x, -1, dims=a) - x for a in self.axes])

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.ishape, dtype=y.dtype, device=y.device)
        for part, a in zip(y, self.axes, strict=True):
            out += torch.roll(part, 1, dims=a) - part
        return out


def remove_readout_oversampling(kspace: np.ndarray, recon_nx: int, axis: int = -1) -> np.ndarray:
    """Crop the readout of Cartesian k-space to the reconstruction field of view.

    Inverse FFT along the readout, keep the central ``recon_nx`` pixels, FFT back. Unsampled lines stay zero,
    so a mask derived from nonzero k-space is unchanged.

    Args:
        kspace: complex array with the readout (kx) along ``axis``.
        recon_nx: readout size of the reconstruction matrix (``header.encoding[0].reconSpace.matrixSize.x``).

    Raises:
        InvalidDataError: the readout is shorter than ``recon_nx``.
    """
    n = kspace.shape[axis]
    if recon_nx > n:
        raise InvalidDataError(f"the readout has {n} samples, fewer than the {recon_nx} of the recon matrix")
    if recon_nx == n:
        return kspace
    image = crop_center(centered_ifft(kspace, (axis,)), recon_nx, axis)
    return centered_fft(image, (axis,)).astype(np.complex64)
