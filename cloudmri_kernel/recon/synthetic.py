"""Physics-informed synthetic training data for deep-learning reconstruction.

Each sample is a random anatomy-like object seen the way a scanner sees it: a complex image with a smooth
phase, multiplied by birdcage-like coil sensitivities (:func:`cloudmri_kernel.mrd.phantom` uses the same
coil model), Fourier transformed (unitary, centred), disturbed by complex Gaussian noise and undersampled along
the phase-encoding direction with a fully sampled centre, from which coil maps are estimated
(:func:`~cloudmri_kernel.recon.coils.lowres_maps`) exactly as at inference. The ground truth is the object
itself, so a network can be trained without any patient data; Cloud-MRI's reference 16 reports that networks
trained this way generalize to real scans.

Objects: a skull-like outer ring, a brain-like interior with 4 to 10 random ellipses of random intensity,
low-frequency texture (smoothed noise) and a polynomial phase. ``contrast`` maps tissue classes to intensities
like a T1-weighted (bright interior, dark fluid) or T2-weighted (bright fluid) scan, so sites in a federated
experiment can be given deliberately different data.

References:
    Zhou Z et al. Cloud-MRI: an MRI raw-data platform... ISMRM 2024; arXiv 2310.11641 (ref. 16 therein).
    Wang S et al. Deep learning for fast MR imaging: physics-informed synthetic data... (the group's
    synthetic-data line of work).
    Roemer PB et al. The NMR phased array. MRM 1990;16:192-225.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.phantom import coil_maps, poisson_disc_lines
from cloudmri_kernel.recon.coils import lowres_maps

CONTRASTS = ("t1", "t2")
PATTERNS = ("uniform", "poisson")
#: Intensity of (background tissue, ellipse "grey matter", ellipse "fluid") per contrast.
_TISSUE = {"t1": (0.8, 0.6, 0.15), "t2": (0.45, 0.6, 1.0)}


@dataclass(frozen=True)
class SyntheticSpec:
    """How one site's data look.

    Attributes:
        matrix: image side (square), even, 16 to 512.
        coils: receive channels.
        accel: phase-encoding undersampling outside the calibration region.
        calib: fully sampled centre lines (used for coil maps at inference, as on scanners).
        noise: complex noise standard deviation relative to the object's peak magnitude.
        pattern: ``uniform`` (every accel-th line) or ``poisson`` (variable-density Poisson-disc lines).
        contrast: ``t1`` or ``t2`` (see the module).
    """

    matrix: int = 64
    coils: int = 8
    accel: int = 4
    calib: int = 12
    noise: float = 0.01
    pattern: str = "poisson"
    contrast: str = "t1"

    def __post_init__(self):
        if self.matrix % 2 or not 16 <= self.matrix <= 512:
            raise UsageError(f"matrix must be even, 16 to 512, got {self.matrix}")
        if not 1 <= self.coils <= 64:
            raise UsageError(f"coils must be 1 to 64, got {self.coils}")
        if not 1 <= self.accel <= self.matrix // 2:
            raise UsageError(f"accel must be 1 to {self.matrix // 2}, got {self.accel}")
        if not 0 < self.calib <= self.matrix:
            raise UsageError(f"calib must be 1 to {self.matrix}, got {self.calib}")
        if self.noise < 0:
            raise UsageError(f"noise must be >= 0, got {self.noise}")
        if self.pattern not in PATTERNS:
            raise UsageError(f"pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if self.contrast not in CONTRASTS:
            raise UsageError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")


@dataclass
class Sample:
    """One training example: what the scanner gives and what the network should return."""

    kspace: np.ndarray  # complex64 (coils, y, x), zero where not acquired
    mask: np.ndarray  # bool (y,), acquired phase-encoding lines
    maps: np.ndarray  # complex64 (coils, y, x), estimated from the calibration lines as at inference
    target: np.ndarray  # complex64 (y, x), the object


def _ellipse(x, y, x0, y0, a, b, angle) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    xr = (x - x0) * cos + (y - y0) * sin
    yr = (y - y0) * cos - (x - x0) * sin
    return (xr / a) ** 2 + (yr / b) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, matrix: int, cutoff: float) -> np.ndarray:
    """Real Gaussian random field with spectrum cut at ``cutoff`` (cycles/pixel), unit standard deviation."""
    spectrum = rng.standard_normal((matrix, matrix)) + 1j * rng.standard_normal((matrix, matrix))
    k = np.fft.fftfreq(matrix)
    spectrum *= np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * cutoff**2))
    field = np.fft.ifft2(spectrum).real
    return field / max(field.std(), 1e-12)


def synthetic_object(rng: np.random.Generator, matrix: int, contrast: str = "t1") -> np.ndarray:
    """A random complex (y, x) object with peak magnitude 1 (see the module for its anatomy)."""
    u = (np.arange(matrix) - matrix // 2) / (matrix / 2)
    x, y = u[None, :], -u[:, None]
    background, grey, fluid = _TISSUE[contrast]
    a, b = rng.uniform(0.6, 0.8), rng.uniform(0.75, 0.92)
    tilt = rng.uniform(-0.2, 0.2)
    head = _ellipse(x, y, 0, 0, a, b, tilt)
    brain = _ellipse(x, y, 0, -0.02, 0.92 * a, 0.92 * b, tilt)
    image = np.where(head, 1.0, 0.0) * 0.9
    image[brain] = background
    for _ in range(rng.integers(4, 11)):
        value = grey if rng.random() < 0.6 else fluid
        ellipse = _ellipse(x, y, rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b,
                           rng.uniform(0.04, 0.25), rng.uniform(0.04, 0.25), rng.uniform(0, np.pi))
        image[ellipse & brain] = value
    image = image * (1 + 0.08 * _smooth_noise(rng, matrix, 0.08)) * head
    coefficients = rng.uniform(-0.6, 0.6, 5)
    phase = coefficients[0] + coefficients[1] * x + coefficients[2] * y + coefficients[3] * x * y \
        + coefficients[4] * (x**2 - y**2)
    image = np.clip(image, 0, None) * np.exp(1j * phase)
    return (image / np.abs(image).max()).astype(np.complex64)


def sampling_mask(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Bool (y,): the pattern's lines plus the ``calib`` centre lines."""
    m = spec.matrix
    lines = np.zeros(m, bool)
    lines[m // 2 - spec.calib // 2: m // 2 - spec.calib // 2 + spec.calib] = True
    if spec.accel == 1:
        return np.ones(m, bool)
    if spec.pattern == "uniform":
        offset = rng.integers(spec.accel)
        return lines | ((np.arange(m) - offset) % spec.accel == 0)
    return lines | poisson_disc_lines(m, max(1, round(m / spec.accel)), rng)


def centred_fft2(image: np.ndarray) -> np.ndarray:
    """Unitary, centred 2D FFT over the last two axes (the phantom module's convention)."""
    shifted = np.fft.ifftshift(image, axes=(-2, -1))
    return np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))


def centred_ifft2(kspace: np.ndarray) -> np.ndarray:
    """Inverse of :func:`centred_fft2`."""
    shifted = np.fft.ifftshift(kspace, axes=(-2, -1))
    return np.fft.fftshift(np.fft.ifft2(shifted, norm="ortho"), axes=(-2, -1))


def synthetic_sample(rng: np.random.Generator, spec: SyntheticSpec) -> Sample:
    """One random object seen through the site's coils, noise and sampling (see the module)."""
    target = synthetic_object(rng, spec.matrix, spec.contrast)
    if rng.random() < 0.5:
        target = target[:, ::-1].copy()
    maps = coil_maps(spec.matrix, spec.coils, rng.uniform(-0.4, 0.4)).astype(np.complex64)
    kspace = centred_fft2(maps * target)
    if spec.noise > 0:
        kspace += (spec.noise / np.sqrt(2)) * (rng.standard_normal(kspace.shape)
                                               + 1j * rng.standard_normal(kspace.shape))
    mask = sampling_mask(rng, spec)
    kspace = (kspace * mask[None, :, None]).astype(np.complex64)
    first = spec.matrix // 2 - spec.calib // 2
    estimated = lowres_maps(kspace[:, first:first + spec.calib], (spec.matrix, spec.matrix))
    return Sample(kspace, mask, np.asarray(estimated, np.complex64), target)


def synthetic_dataset(spec: SyntheticSpec, count: int, seed: int) -> list[Sample]:
    """``count`` independent samples, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [synthetic_sample(rng, spec) for _ in range(count)]
