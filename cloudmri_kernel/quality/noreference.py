"""No-reference image quality: measures that need no ground truth, for real scans.

* :func:`snr_background` — signal-to-noise ratio from the object's mean and the noise in the air around it
  (two-region method), corrected for the non-Gaussian statistics of magnitude images.
* :func:`gradient_entropy` — entropy of the image-gradient magnitude; it *rises* with blur and motion ghosts.
* :func:`tenengrad` — mean squared Sobel gradient, normalized by the image energy; it *falls* with blur.

All accept a 2D image (y, x) or a volume (slices, y, x); gradients are taken within slices (slices may be
thick or gapped). Complex input is reduced to its magnitude.

References:
    Kaufman L, Kramer DM, Crooks LE, Ortendahl DA. Measuring signal-to-noise ratios in MR imaging.
    Radiology 1989;173:265-267.
    NEMA MS 1-2008. Determination of Signal-to-Noise Ratio (SNR) in Diagnostic Magnetic Resonance Imaging.
    Henkelman RM. Measurement of signal intensities in the presence of noise in MR images. Med Phys
    1985;12:232-233.
    Constantinides CD, Atalar E, McVeigh ER. Signal-to-noise measurements in magnitude images from NMR phased
    arrays. Magn Reson Med 1997;38:852-857.
    McGee KP, Manduca A, Felmlee JP, Riederer SJ, Ehman RL. Image metric-based correction (autocorrection)
    of motion effects: analysis of image metrics. J Magn Reson Imaging 2000;11:174-181.
    Krotkov E. Focusing. Int J Comput Vision 1987;1:223-237 (Tenengrad).
    Otsu N. A threshold selection method from gray-level histograms. IEEE Trans Syst Man Cybern 1979;9:62-66.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.special import gammaln

#: Fewest background pixels :func:`snr_background` accepts for a noise estimate.
MIN_BACKGROUND_PIXELS = 100


def _volume(image: np.ndarray) -> np.ndarray:
    values = np.abs(np.asarray(image)).astype(np.float64, copy=False)
    if values.ndim not in (2, 3):
        raise ValueError(f"expected an image (y, x) or a volume (slices, y, x), got shape {values.shape}")
    if not np.isfinite(values).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise ValueError(f"the image has a non-finite value at index {where}")
    return values[np.newaxis] if values.ndim == 2 else values


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the grey level that maximizes the between-class variance of the histogram."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sum_low / weight_low
        mean_high = (sum_low[-1] - sum_low) / weight_high
        between = (weight_low * weight_high * (mean_low - mean_high) ** 2)[:-1]
    if np.isnan(between).all():  # one grey level: everything is one class
        return float(edges[-1])
    return float(centres[int(np.nanargmax(between))])


MIN_OBJECT_FRACTION = 0.05


def _object_masks(volume: np.ndarray, threshold: float) -> np.ndarray:
    """Per slice: the pixels above ``threshold`` with holes filled, then opened to drop isolated noise pixels."""
    return np.stack([ndimage.binary_opening(ndimage.binary_fill_holes(plane > threshold), iterations=1)
                     for plane in volume])


def object_and_background(image: np.ndarray, margin: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Automatic masks of the object and of the air around it, per slice.

    The object is the Otsu foreground with holes filled, then opened (to drop isolated noise pixels); when that
    leaves under 5 % of the image (only a bright rim passed), the values below the threshold are split again. The
    background is everything farther than ``margin`` pixels from the object, so that edges and the blur of the
    point-spread function stay out of the noise estimate.

    Args:
        margin: gap in pixels between object and background; default 5 % of the smaller matrix side, at least 2.

    Returns:
        (object, background): boolean arrays of the image's shape, (slices, y, x) for volumes.
    """
    volume = _volume(image)
    margin = max(2, round(0.05 * min(volume.shape[1:]))) if margin is None else margin
    threshold = otsu_threshold(volume)
    foreground = _object_masks(volume, threshold)
    if foreground.mean() < MIN_OBJECT_FRACTION:
        # Only a bright rim (skull, fat) passed, and opening erased it: the body lies between the noise and the
        # rim, so split the values below the first threshold again (a two-level Otsu).
        threshold = otsu_threshold(volume[volume < threshold])
        foreground = _object_masks(volume, threshold)
    background = np.stack([~ndimage.binary_dilation(mask, iterations=margin) if mask.any() else np.ones_like(mask)
                           for mask in foreground])
    shape = np.shape(image)[-2:] if np.ndim(image) == 2 else volume.shape
    return foreground.reshape(shape), background.reshape(shape)


def _chi_std_factor(coils: int) -> float:
    """Standard deviation of pure-noise magnitude (root-sum-of-squares of ``coils`` channels) in units of σ."""
    mean = math.sqrt(2) * math.exp(gammaln(coils + 0.5) - gammaln(coils))
    return math.sqrt(2 * coils - mean**2)


def snr_background(image: np.ndarray, coils: int = 1, margin: int | None = None) -> float:
    r"""SNR by the two-region method: mean signal of the object over the noise σ measured in the background.

    In a magnitude image the background is not Gaussian but Rayleigh (one channel) or central chi with
    :math:`2L` degrees of freedom (root-sum-of-squares of :math:`L` channels with equal noise), whose standard
    deviation is a fixed fraction of the channel noise σ (0.655 for one channel, Henkelman 1985; Constantinides
    1997 for :math:`L` channels):

    .. math:: \mathrm{SNR} = \frac{\bar S_\text{object}}{\sigma}, \quad
              \sigma = \frac{\mathrm{SD}_\text{background}}{\sqrt{2L - 2\,\Gamma(L+\tfrac12)^2/\Gamma(L)^2}}

    The object mean is taken over the object mask eroded by 2 pixels (away from edges).

    Limits: the noise must be spatially uniform (no parallel-imaging g-factor, no intensity normalization
    that scales the background), and ghosts in the background raise the noise estimate (lower SNR).

    Args:
        coils: channels combined by root-sum-of-squares into the image (1 for a single-channel or complex-combined
            image).
        margin: see :func:`object_and_background`.

    Raises:
        ValueError: no object or too little background (the object fills the field of view).
    """
    if coils < 1:
        raise ValueError(f"coils must be at least 1, got {coils}")
    volume = _volume(image)
    foreground, background = object_and_background(volume, margin)
    if not foreground.any():
        raise ValueError("no object found: the image is uniform")
    if background.sum() < MIN_BACKGROUND_PIXELS:
        raise ValueError(f"only {int(background.sum())} background pixels (need {MIN_BACKGROUND_PIXELS}): the "
                         "object fills the field of view; measure SNR on a noise scan or with a smaller margin")
    core = np.stack([ndimage.binary_erosion(m, iterations=2) for m in foreground])
    signal = volume[core] if core.any() else volume[foreground]
    noise_sd = float(np.std(volume[background], ddof=1))
    if noise_sd == 0:
        return math.inf
    return float(signal.mean()) * _chi_std_factor(coils) / noise_sd


def _in_plane_gradients(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.gradient(volume, axis=1), np.gradient(volume, axis=2)


def gradient_entropy(image: np.ndarray) -> float:
    r"""Entropy (in nats) of the normalized gradient magnitude; lower is sharper (McGee et al. 2000).

    .. math:: h_i = \frac{\lvert\nabla I\rvert_i}{\sum_j \lvert\nabla I\rvert_j}, \quad
              E = -\sum_i h_i \ln h_i

    Gradients are central differences within each slice. The value does not change when the image is
    scaled, but grows with the number of pixels: compare images of the same matrix only.
    """
    gy, gx = _in_plane_gradients(_volume(image))
    magnitude = np.hypot(gy, gx).ravel()
    total = magnitude.sum()
    if total == 0:
        return 0.0
    h = magnitude[magnitude > 0] / total
    return float(-(h * np.log(h)).sum())


def tenengrad(image: np.ndarray) -> float:
    r"""Tenengrad sharpness: mean squared Sobel gradient over the mean squared intensity; higher is sharper.

    .. math:: T = \frac{\overline{G_x^2 + G_y^2}}{\overline{I^2}}

    Krotkov's Tenengrad without a threshold, normalized by the image energy so that the value does not depend
    on the intensity scale of a reconstruction.
    """
    volume = _volume(image)
    energy = float(np.mean(volume**2))
    if energy == 0:
        return 0.0
    gx = ndimage.sobel(volume, axis=2)
    gy = ndimage.sobel(volume, axis=1)
    return float(np.mean(gx**2 + gy**2)) / energy
