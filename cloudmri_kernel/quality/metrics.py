"""Full-reference image quality: NMSE, PSNR and SSIM exactly as the fastMRI challenge computes them.

The numbers are comparable with published fastMRI results: the same formulas, the same data range (the
maximum of the whole reference *volume*, not of each slice) and the same SSIM (scikit-image's
``structural_similarity`` with its defaults: 7×7 uniform window, :math:`K_1 = 0.01`, :math:`K_2 = 0.03`, sample
covariance, border of 3 pixels cropped before averaging), re-implemented here on ``scipy.ndimage`` so that
scikit-image is not needed. Arithmetic follows the reference implementations' precision: float32 volumes are
filtered in float32, as scikit-image does.

Inputs are magnitude volumes (slices, y, x); a 2D image counts as a volume of one slice and complex input is
reduced to its magnitude. Integer input is converted to float64 first (fastMRI would wrap around on unsigned
subtraction).

References:
    Zbontar J et al. fastMRI: An Open Dataset and Benchmarks for Accelerated MRI. arXiv:1811.08839, 2018
    (metrics: ``fastmri/evaluate.py``).
    Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error visibility to structural
    similarity. IEEE Trans Image Process 2004;13:600-612.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

#: SSIM constants of Wang et al. 2004 and scikit-image's defaults, which fastMRI uses.
SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _magnitude(volume: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(volume)
    if np.iscomplexobj(values):
        values = np.abs(values)
    elif not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if values.ndim not in (2, 3):
        raise ValueError(f"{name} must be an image (y, x) or a volume (slices, y, x), got shape {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(values[where]) else "an infinite value"
        raise ValueError(f"{name} has {kind} at index {where} ({int(bad.sum())} non-finite values in all)")
    return values[np.newaxis] if values.ndim == 2 else values


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if np.shape(gt) != np.shape(pred):
        raise ValueError(f"reference has shape {np.shape(gt)} but the prediction has shape {np.shape(pred)}: "
                         "crop or resample them to the same matrix first")
    return _magnitude(gt, "reference"), _magnitude(pred, "prediction")


def _data_range(gt: np.ndarray, maxval: float | None) -> float:
    value = float(gt.max()) if maxval is None else float(maxval)
    if not value > 0:
        raise ValueError(f"the data range (maxval) must be positive, got {value}: "
                         "the reference is all zero or maxval is wrong")
    return value


def _float_type(*dtypes: np.dtype) -> type:
    """scikit-image's ``_supported_float_type``: float32 stays float32, anything else becomes float64."""
    return np.float32 if all(np.dtype(d) in (np.float16, np.float32) for d in dtypes) else np.float64


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    r"""Normalized mean squared error of a volume.

    .. math:: \mathrm{NMSE} = \frac{\lVert x - \hat x\rVert_2^2}{\lVert x\rVert_2^2}

    Raises:
        ValueError: different shapes, non-finite values, or an all-zero reference.
    """
    gt, pred = _pair(gt, pred)
    reference = float(np.linalg.norm(gt)) ** 2
    if reference == 0:
        raise ValueError("the reference is all zero: NMSE is undefined")
    return float(np.linalg.norm(gt - pred)) ** 2 / reference


def nrmse(gt: np.ndarray, pred: np.ndarray) -> float:
    r"""Normalized root mean squared error, :math:`\sqrt{\mathrm{NMSE}}`."""
    return math.sqrt(nmse(gt, pred))


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    r"""Peak signal-to-noise ratio of a volume in dB.

    .. math:: \mathrm{PSNR} = 10 \log_{10} \frac{R^2}{\mathrm{MSE}}, \quad R = \max x \text{ (volume maximum)}

    Returns ``inf`` for identical volumes (zero error).

    Args:
        maxval: data range :math:`R`; default the maximum of the reference volume, as in fastMRI.
    """
    gt, pred = _pair(gt, pred)
    data_range = _data_range(gt, maxval)
    float_type = _float_type(gt.dtype, pred.dtype)
    error = np.mean((gt.astype(float_type) - pred.astype(float_type)) ** 2, dtype=np.float64)
    if error == 0:
        return math.inf
    return float(10 * np.log10(data_range**2 / error))


def ssim_slice(gt: np.ndarray, pred: np.ndarray, data_range: float) -> float:
    r"""Mean SSIM of one 2D image, scikit-image's ``structural_similarity`` with its default parameters.

    Local means, variances and covariance come from a 7×7 uniform window (mirror-reflected at the borders),
    with the sample-covariance factor :math:`N/(N-1)`, :math:`N = 49`:

    .. math:: \mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
                                   {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
              \quad C_1 = (K_1 R)^2,\ C_2 = (K_2 R)^2

    The map is averaged after cropping 3 pixels at every border, where the window reaches outside the image.

    Raises:
        ValueError: an image smaller than the 7×7 window.
    """
    if min(gt.shape) < SSIM_WIN_SIZE:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN_SIZE}×{SSIM_WIN_SIZE} pixels, got {gt.shape}")
    float_type = _float_type(gt.dtype)
    x = gt.astype(float_type, copy=False)
    y = pred.astype(float_type, copy=False)
    points = SSIM_WIN_SIZE**x.ndim
    cov_norm = points / (points - 1)
    ux = uniform_filter(x, size=SSIM_WIN_SIZE)
    uy = uniform_filter(y, size=SSIM_WIN_SIZE)
    uxx = uniform_filter(x * x, size=SSIM_WIN_SIZE)
    uyy = uniform_filter(y * y, size=SSIM_WIN_SIZE)
    uxy = uniform_filter(x * y, size=SSIM_WIN_SIZE)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    a1, a2 = 2 * ux * uy + c1, 2 * vxy + c2
    b1, b2 = ux**2 + uy**2 + c1, vx + vy + c2
    pad = (SSIM_WIN_SIZE - 1) // 2
    index = (slice(pad, -pad),) * x.ndim
    return float(((a1 * a2) / (b1 * b2))[index].mean(dtype=np.float64))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Structural similarity of a volume: the mean over slices of :func:`ssim_slice`.

    Args:
        maxval: data range; default the maximum of the reference *volume*, used for every slice (fastMRI).
    """
    gt, pred = _pair(gt, pred)
    data_range = _data_range(gt, maxval)
    return sum(ssim_slice(g, p, data_range) for g, p in zip(gt, pred, strict=True)) / len(gt)


@dataclass(frozen=True)
class QualityRow:
    """The full-reference metrics of one method on one case (one volume)."""

    method: str
    case: str
    ssim: float
    psnr: float
    nmse: float

    @property
    def nrmse(self) -> float:
        return math.sqrt(self.nmse)


def compare(reference: np.ndarray | Mapping[str, np.ndarray],
            candidates: Mapping[str, np.ndarray | Mapping[str, np.ndarray]]) -> list[QualityRow]:
    """SSIM, PSNR and NMSE of every candidate reconstruction against the reference, one row per method and case.

    Args:
        reference: the ground-truth volume, or several cases as ``{case name: volume}``.
        candidates: ``{method name: volume}`` for a single reference volume, or ``{method: {case: volume}}``
            with the same cases as ``reference``.

    Example:
        >>> rows = compare(truth, {"zero-filled": zf, "SENSE": sense})  # doctest: +SKIP
        >>> print(format_table(rows, markdown=True))  # doctest: +SKIP
    """
    cases = dict(reference) if isinstance(reference, Mapping) else {"": reference}
    if not cases:
        raise ValueError("no reference volume given")
    rows = []
    for method, volumes in candidates.items():
        if not isinstance(volumes, Mapping):
            if len(cases) != 1:
                raise ValueError(f"method '{method}' gives one volume but the reference has {len(cases)} cases "
                                 f"({', '.join(cases)}): give {{case: volume}} for it")
            volumes = {next(iter(cases)): volumes}
        missing = [case for case in cases if case not in volumes]
        unknown = [case for case in volumes if case not in cases]
        if missing or unknown:
            raise ValueError(f"method '{method}' does not match the reference cases: missing {missing}, "
                             f"not in the reference {unknown}")
        for case, truth in cases.items():
            try:
                rows.append(QualityRow(method, case, ssim(truth, volumes[case]), psnr(truth, volumes[case]),
                                       nmse(truth, volumes[case])))
            except ValueError as exc:
                label = f"method '{method}'" + (f", case '{case}'" if case else "")
                raise ValueError(f"{label}: {exc}") from None
    return rows


def summarize(rows: Sequence[QualityRow]) -> list[QualityRow]:
    """One row per method with the mean over its cases (case ``"mean of N"``), as reader-study tables show."""
    by_method: dict[str, list[QualityRow]] = {}
    for row in rows:
        by_method.setdefault(row.method, []).append(row)
    return [QualityRow(method, f"mean of {len(group)}",
                       float(np.mean([r.ssim for r in group])), float(np.mean([r.psnr for r in group])),
                       float(np.mean([r.nmse for r in group])))
            for method, group in by_method.items()]


def format_table(rows: Sequence[QualityRow], markdown: bool = False) -> str:
    """The rows as an aligned text table, or a Markdown table; the case column only when there are cases."""
    with_case = any(row.case for row in rows)
    titles = ["Method", *(["Case"] if with_case else []), "SSIM", "PSNR (dB)", "NMSE"]
    body = [[row.method, *([row.case] if with_case else []), f"{row.ssim:.4f}", f"{row.psnr:.2f}",
             f"{row.nmse:.4g}"] for row in rows]
    texts = 1 + with_case
    if markdown:
        rule = ["---"] * texts + ["---:"] * 3
        return "\n".join("| " + " | ".join(cells) + " |" for cells in [titles, rule, *body])
    widths = [max(len(cells[i]) for cells in [titles, *body]) for i in range(len(titles))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < texts else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(titles), line(["-" * w for w in widths]), *map(line, body)])


def to_dict(rows: Sequence[QualityRow]) -> list[dict[str, str | float | None]]:
    """The rows as JSON-ready dictionaries; an infinite PSNR (identical volumes) becomes ``None``."""
    return [{"method": row.method, "case": row.case, "ssim": row.ssim,
             "psnr": row.psnr if math.isfinite(row.psnr) else None, "nmse": row.nmse, "nrmse": row.nrmse}
            for row in rows]
