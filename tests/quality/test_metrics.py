"""Image quality metrics: fastMRI definitions checked against closed forms and a slow literal SSIM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from cloudmri_kernel.quality import (
    compare,
    format_table,
    gradient_entropy,
    nmse,
    nrmse,
    object_and_background,
    psnr,
    snr_background,
    ssim,
    summarize,
    tenengrad,
    to_dict,
)
from cloudmri_kernel.quality.metrics import ssim_slice


def phantom(size: int = 64, slices: int = 2) -> np.ndarray:
    """A disk with two brighter and one darker ellipse, in the middle of an empty field of view."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    image = (x**2 + y**2 < 0.6**2).astype(float)
    image += 0.5 * (((x - 0.2) / 0.15) ** 2 + ((y + 0.1) / 0.3) ** 2 < 1)
    image += 0.3 * (((x + 0.25) / 0.1) ** 2 + (y / 0.1) ** 2 < 1)
    image -= 0.4 * (((x + 0.1) / 0.2) ** 2 + ((y - 0.3) / 0.08) ** 2 < 1)
    return np.stack([image * (1 + 0.1 * k) for k in range(slices)])


def slow_ssim(gt: np.ndarray, pred: np.ndarray, data_range: float) -> float:
    """The SSIM formula written out window by window (7×7, sample statistics, windows fully inside)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(3, gt.shape[0] - 3):
        for j in range(3, gt.shape[1] - 3):
            a = gt[i - 3:i + 4, j - 3:j + 4].ravel()
            b = pred[i - 3:i + 4, j - 3:j + 4].ravel()
            ma, mb = a.mean(), b.mean()
            va, vb = a.var(ddof=1), b.var(ddof=1)
            cov = ((a - ma) * (b - mb)).sum() / (a.size - 1)
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_identical_volumes():
    volume = np.random.default_rng(0).random((3, 16, 16))
    assert nmse(volume, volume) == 0
    assert nrmse(volume, volume) == 0
    assert psnr(volume, volume) == math.inf
    assert ssim(volume, volume) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_has_closed_forms():
    gt = np.arange(2 * 10 * 12, dtype=float).reshape(2, 10, 12) / 10  # ramp, max 23.9
    offset = 0.5
    pred = gt + offset
    assert nmse(gt, pred) == pytest.approx(gt.size * offset**2 / np.sum(gt**2), rel=1e-12)
    assert nrmse(gt, pred) == pytest.approx(math.sqrt(gt.size * offset**2 / np.sum(gt**2)), rel=1e-12)
    assert psnr(gt, pred) == pytest.approx(20 * math.log10(23.9) - 10 * math.log10(offset**2), rel=1e-12)
    assert psnr(gt, pred, maxval=1.0) == pytest.approx(-10 * math.log10(offset**2), rel=1e-12)


def test_ssim_of_constant_images_by_hand():
    # One 7×7 window: zero variances, so SSIM = (2ab + C1) / (a² + b² + C1) with C1 = (0.01 R)², R = a.
    gt, pred = np.full((7, 7), 1.0), np.full((7, 7), 0.5)
    assert ssim(gt, pred) == pytest.approx((1 + 1e-4) / (1.25 + 1e-4), rel=1e-12)
    assert ssim(gt, pred, maxval=10.0) == pytest.approx((1 + 1e-2) / (1.25 + 1e-2), rel=1e-12)


def test_ssim_matches_literal_formula_on_random_pair():
    rng = np.random.default_rng(42)
    gt = rng.random((20, 20))
    pred = gt + 0.3 * rng.standard_normal((20, 20))
    expected = slow_ssim(gt, pred, data_range=gt.max())
    assert ssim(gt, pred) == pytest.approx(expected, abs=1e-6)
    assert 0.2 < expected < 0.9  # a pair that actually exercises the formula


def test_ssim_falls_monotonically_with_noise():
    gt = phantom()
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(gt.shape)
    scores = [ssim(gt, gt + level * noise) for level in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)]
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))


def test_volume_maximum_is_the_data_range_for_every_slice():
    rng = np.random.default_rng(3)
    gt = np.stack([rng.random((16, 16)), 10 * rng.random((16, 16))])
    pred = gt + 0.05 * rng.standard_normal(gt.shape)
    volume_max = gt.max()
    expected = (ssim_slice(gt[0], pred[0], volume_max) + ssim_slice(gt[1], pred[1], volume_max)) / 2
    per_slice_max = (ssim_slice(gt[0], pred[0], gt[0].max()) + ssim_slice(gt[1], pred[1], gt[1].max())) / 2
    assert ssim(gt, pred) == pytest.approx(expected, rel=1e-12)
    assert abs(ssim(gt, pred) - per_slice_max) > 1e-3
    mse = np.mean((gt - pred) ** 2)
    assert psnr(gt, pred) == pytest.approx(10 * math.log10(volume_max**2 / mse), rel=1e-12)


def test_complex_input_uses_magnitude_and_float32_stays_close():
    rng = np.random.default_rng(4)
    gt = phantom(32, 1) * np.exp(1j * rng.random((1, 32, 32)))
    pred = gt + 0.05 * (rng.standard_normal(gt.shape) + 1j * rng.standard_normal(gt.shape))
    assert ssim(gt, pred) == ssim(np.abs(gt), np.abs(pred))
    assert psnr(gt, pred) == psnr(np.abs(gt), np.abs(pred))
    single = ssim(np.abs(gt).astype(np.float32), np.abs(pred).astype(np.float32))
    assert single == pytest.approx(ssim(np.abs(gt), np.abs(pred)), abs=1e-5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(2, 16, 16\).*\(2, 16, 15\)"):
        ssim(np.ones((2, 16, 16)), np.ones((2, 16, 15)))
    pred = np.ones((2, 16, 16))
    pred[1, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"prediction has NaN at index \(1, 4, 5\)"):
        psnr(np.ones((2, 16, 16)), pred)
    with pytest.raises(ValueError, match="all zero"):
        nmse(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.ones((6, 16)), np.ones((6, 16)))


def test_compare_tabulates_methods_and_cases():
    gt = phantom(32)
    rng = np.random.default_rng(5)
    good, bad = gt + 0.01 * rng.standard_normal(gt.shape), gt + 0.2 * rng.standard_normal(gt.shape)
    rows = compare(gt, {"good": good, "bad": bad, "same": gt})
    assert [r.method for r in rows] == ["good", "bad", "same"]
    assert rows[0].ssim > rows[1].ssim and rows[0].psnr > rows[1].psnr and rows[0].nmse < rows[1].nmse
    assert rows[0].ssim == ssim(gt, good) and rows[1].nmse == nmse(gt, bad)
    text = format_table(rows)
    assert text.splitlines()[0].split() == ["Method", "SSIM", "PSNR", "(dB)", "NMSE"]
    assert "inf" in text.splitlines()[-1]
    markdown = format_table(rows, markdown=True).splitlines()
    assert markdown[0] == "| Method | SSIM | PSNR (dB) | NMSE |"
    assert markdown[2].startswith(f"| good | {rows[0].ssim:.4f} |")
    records = json.loads(json.dumps(to_dict(rows), allow_nan=False))
    assert records[2]["psnr"] is None and records[2]["nmse"] == 0
    assert records[1]["nrmse"] == pytest.approx(math.sqrt(rows[1].nmse))

    cases = {"a": gt, "b": 2 * gt}
    rows = compare(cases, {"good": {"a": good, "b": 2 * good}})
    assert [(r.method, r.case) for r in rows] == [("good", "a"), ("good", "b")]
    assert "Case" in format_table(rows)
    (mean,) = summarize(rows)
    assert mean.case == "mean of 2" and mean.ssim == pytest.approx((rows[0].ssim + rows[1].ssim) / 2)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        compare(cases, {"good": {"a": good}})
    with pytest.raises(ValueError, match="method 'bad'.*shape"):
        compare(gt, {"bad": gt[:, :8]})


def noisy_magnitude(image: np.ndarray, sigma: float, seed: int, coils: int = 1) -> np.ndarray:
    """Root-sum-of-squares of ``coils`` channels, each the image/√coils plus complex Gaussian noise σ."""
    rng = np.random.default_rng(seed)
    shape = (coils, *image.shape)
    channels = image / math.sqrt(coils) + sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return np.sqrt(np.sum(np.abs(channels) ** 2, axis=0))


def test_background_snr_recovers_the_noise_level_and_falls_with_noise():
    image = phantom(96, 1)[0]
    obj, background = object_and_background(noisy_magnitude(image, 0.02, 0))
    assert obj.shape == image.shape and not (obj & background).any() and background.sum() > 1000
    snrs = [snr_background(noisy_magnitude(image, sigma, seed=7)) for sigma in (0.01, 0.02, 0.05, 0.1, 0.2)]
    assert all(a > b for a, b in zip(snrs, snrs[1:], strict=False))
    core = ndimage.binary_erosion(image > 0, iterations=3)
    true_snr = image[core].mean() / 0.05  # what the method aims at: mean object signal over channel noise σ
    assert snr_background(noisy_magnitude(image, 0.05, seed=8)) == pytest.approx(true_snr, rel=0.04)
    rss = noisy_magnitude(image, 0.05, seed=9, coils=4)  # chi background: the Rayleigh factor would be 6 % off
    assert snr_background(rss, coils=4) == pytest.approx(true_snr, rel=0.04)
    assert abs(snr_background(rss, coils=4) - true_snr) < abs(snr_background(rss) - true_snr)
    with pytest.raises(ValueError, match="no object"):
        snr_background(np.ones((32, 32)))


def test_sharpness_measures_follow_blur():
    image = noisy_magnitude(phantom(64, 1)[0], 0.005, seed=2)
    blurred = [ndimage.gaussian_filter(image, sigma) for sigma in (0.5, 1.0, 2.0, 4.0)]
    entropies = [gradient_entropy(b) for b in [image, *blurred]]
    sharpness = [tenengrad(b) for b in [image, *blurred]]
    assert all(a < b for a, b in zip(entropies, entropies[1:], strict=False))  # entropy rises with blur
    assert all(a > b for a, b in zip(sharpness, sharpness[1:], strict=False))  # Tenengrad falls with blur
    assert gradient_entropy(5 * image) == pytest.approx(entropies[0], rel=1e-12)
    assert tenengrad(5 * image) == pytest.approx(sharpness[0], rel=1e-12)
