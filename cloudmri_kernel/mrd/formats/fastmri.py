"""Importer for fastMRI-style HDF5 files: ``kspace`` plus the original ``ismrmrd_header``.

fastMRI stores k-space as (slices, coils, readout, phase) with the readout oversampled, and an optional
``mask`` over the phase-encoding columns for undersampled data; columns outside the mask (or all zero,
as in the zero-padded edges) are not acquisitions and are not written.

References:
    Zbontar J et al. fastMRI: An Open Dataset and Benchmarks for Accelerated MRI. arXiv:1811.08839, 2018.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import ismrmrd.xsd as xsd
import numpy as np

from cloudmri_kernel.errors import InvalidDataError
from cloudmri_kernel.mrd.build import cartesian_acquisitions
from cloudmri_kernel.mrd.formats import RawContent
from cloudmri_kernel.mrd.header import parse_header
from cloudmri_kernel.mrd.reader import AcquisitionBlock


def is_fastmri(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "kspace" in f and "ismrmrd_header" in f
    except OSError:
        return False


def read_fastmri(path: Path) -> RawContent:
    """Read a fastMRI file: one acquisition per acquired (slice, phase-encoding column)."""
    with h5py.File(path, "r") as f:
        kspace = f["kspace"]
        if kspace.ndim not in (3, 4) or not np.issubdtype(kspace.dtype, np.complexfloating):
            raise InvalidDataError(
                f"'kspace' must be complex (slices, [coils,] readout, phase), got {kspace.dtype} {kspace.shape}",
                path)
        header = parse_header(f["ismrmrd_header"][()], path)
        data = kspace[()]
        column_mask = np.asarray(f["mask"][()], bool) if "mask" in f else None
    if data.ndim == 3:
        data = data[:, np.newaxis]
    slices, coils, readout, phase = data.shape
    if column_mask is not None and column_mask.shape != (phase,):
        raise InvalidDataError(f"'mask' has shape {column_mask.shape}, expected ({phase},)", path)
    # To (slices, coils, kz=1, ky=phase, kx=readout).
    volume = np.ascontiguousarray(data.transpose(0, 1, 3, 2))[:, :, np.newaxis]
    sampled = np.abs(volume).max(axis=(1, 4)) > 0
    if column_mask is not None:
        sampled &= column_mask[np.newaxis, np.newaxis, :]
    heads, samples = cartesian_acquisitions(volume, sampled)

    enc = header.encoding[0]
    enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y = readout, phase
    limits = enc.encodingLimits or xsd.encodingLimitsType()
    limits.kspace_encoding_step_1 = xsd.limitType(minimum=0, maximum=phase - 1, center=phase // 2)
    limits.kspace_encoding_step_2 = xsd.limitType(minimum=0, maximum=0, center=0)
    limits.slice = xsd.limitType(minimum=0, maximum=slices - 1, center=slices // 2)
    enc.encodingLimits = limits
    if header.acquisitionSystemInformation is not None:
        header.acquisitionSystemInformation.receiverChannels = coils
    block = AcquisitionBlock(0, heads, list(samples), [np.zeros((readout, 0), np.float32)] * len(heads))
    return RawContent(header, [block], source_format="fastmri")
