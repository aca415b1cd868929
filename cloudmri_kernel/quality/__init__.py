"""Image quality: full-reference metrics as in fastMRI (SSIM, PSNR, NMSE) and no-reference measures for real data.

Example:
    >>> from cloudmri_kernel.quality import compare, format_table
    >>> rows = compare(truth, {"zero-filled": zero_filled, "CS": compressed_sensing})  # doctest: +SKIP
    >>> print(format_table(rows, markdown=True))  # doctest: +SKIP
"""

from cloudmri_kernel.quality.metrics import (
    QualityRow,
    compare,
    format_table,
    nmse,
    nrmse,
    psnr,
    ssim,
    summarize,
    to_dict,
)
from cloudmri_kernel.quality.noreference import gradient_entropy, object_and_background, snr_background, tenengrad

__all__ = [
    "QualityRow",
    "compare",
    "format_table",
    "gradient_entropy",
    "nmse",
    "nrmse",
    "object_and_background",
    "psnr",
    "snr_background",
    "ssim",
    "summarize",
    "tenengrad",
    "to_dict",
]
