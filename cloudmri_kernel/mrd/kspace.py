"""Sorting acquisitions into a Cartesian k-space array by their encoding counters.

Imaging lines, calibration-only lines and noise scans are separated by their MRD flags. Lines are placed so
that the header's k-space centre (``encodingLimits.*.center``) lands at index N//2, and samples so that
``center_sample`` lands at kx = Nx//2, which handles partial Fourier and asymmetric echoes. Reversed lines
(``IS_REVERSE``, e.g. EPI) are flipped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudmri_kernel.errors import InvalidDataError
from cloudmri_kernel.mrd.reader import MRDFile, flag_mask, has_flag

#: Loop counters that become leading axes of the k-space array, outermost first.
OUTER_DIMS = ("repetition", "set", "phase", "contrast", "average", "slice")

_SKIPPED = flag_mask("IS_NOISE_MEASUREMENT", "IS_NAVIGATION_DATA", "IS_PHASECORR_DATA", "IS_HPFEEDBACK_DATA",
                     "IS_DUMMYSCAN_DATA", "IS_RTFEEDBACK_DATA", "IS_SURFACECOILCORRECTIONSCAN_DATA",
                     "IS_PHASE_STABILIZATION_REFERENCE", "IS_PHASE_STABILIZATION")


@dataclass
class SortedKSpace:
    """Cartesian k-space of one encoding space.

    Attributes:
        kspace: complex64, axes named by ``dims``: the varying loop counters of :data:`OUTER_DIMS`
            (``slice`` always), then ``coil, kz, ky, kx``.
        mask: bool, ``kspace.shape`` without the coil and kx axes: which lines were acquired for imaging.
        calibration: complex64 like ``kspace`` holding every line flagged for calibration, or None.
        noise: complex64 (coil, samples) from the noise scans, or None.
        dims: axis names of ``kspace``.
    """

    kspace: np.ndarray
    mask: np.ndarray
    calibration: np.ndarray | None
    noise: np.ndarray | None
    dims: tuple[str, ...]

    def axis(self, name: str) -> int:
        return self.dims.index(name)


def _size_and_offset(limit, matrix: int, counters: np.ndarray) -> tuple[int, int]:
    """Axis length and the shift that puts the header's centre at length//2."""
    size = max(int(matrix), int(counters.max()) + 1 if counters.size else 1)
    center = int(limit.center) if limit is not None and limit.center is not None else size // 2
    offset = size // 2 - center if 0 < center < size else 0
    if counters.size and (counters.min() + offset < 0 or counters.max() + offset >= size):
        offset = 0
    return size, offset


def read_cartesian(mrd: MRDFile, encoding: int = 0, squeeze: bool = True) -> SortedKSpace:
    """Read all acquisitions of one encoding space into a sorted Cartesian k-space array.

    The array is allocated once and filled chunk by chunk, so memory stays close to the array's own size.

    Args:
        mrd: an open file.
        encoding: which ``<encoding>`` of the header (``encoding_space_ref``).
        squeeze: drop loop-counter axes of length one (except ``slice``).
    """
    header = mrd.header
    if encoding >= len(header.encoding):
        raise InvalidDataError(f"the header has {len(header.encoding)} encoding(s), not {encoding + 1}", mrd.path)
    enc = header.encoding[encoding]
    heads = mrd.acquisition_headers()
    if len(heads) == 0:
        raise InvalidDataError("the file holds no acquisitions", mrd.path)
    flags = heads["flags"].astype(np.uint64)
    is_noise = has_flag(flags, "IS_NOISE_MEASUREMENT")
    in_space = heads["encoding_space_ref"] == encoding
    data_lines = in_space & ((flags & _SKIPPED) == 0)
    if not data_lines.any():
        raise InvalidDataError(f"no imaging acquisitions in encoding space {encoding}", mrd.path)
    calib_only = has_flag(flags, "IS_PARALLEL_CALIBRATION")
    calib_any = calib_only | has_flag(flags, "IS_PARALLEL_CALIBRATION_AND_IMAGING")

    idx = heads["idx"]
    limits = enc.encodingLimits
    ny, oy = _size_and_offset(limits.kspace_encoding_step_1, enc.encodedSpace.matrixSize.y,
                              idx["kspace_encode_step_1"][data_lines])
    nz, oz = _size_and_offset(limits.kspace_encoding_step_2, enc.encodedSpace.matrixSize.z,
                              idx["kspace_encode_step_2"][data_lines])
    samples = heads["number_of_samples"][data_lines]
    nx = max(int(enc.encodedSpace.matrixSize.x), int(samples.max()))
    coils = int(heads["active_channels"][data_lines].max())
    outer_sizes = [int(idx[d][data_lines].max()) + 1 for d in OUTER_DIMS]
    keep = [d == "slice" or n > 1 or not squeeze for d, n in zip(OUTER_DIMS, outer_sizes, strict=True)]
    dims = tuple(d for d, k in zip(OUTER_DIMS, keep, strict=True) if k) + ("coil", "kz", "ky", "kx")
    outer_shape = tuple(n for n, k in zip(outer_sizes, keep, strict=True) if k)

    kspace = np.zeros((*outer_shape, coils, nz, ny, nx), np.complex64)
    mask = np.zeros((*outer_shape, nz, ny), bool)
    calibration = np.zeros_like(kspace) if calib_any[data_lines].any() else None
    noise_parts: list[np.ndarray] = []

    for block in mrd.iter_acquisitions(mrd.chunk_size(heads)):
        rows = np.arange(block.start, block.start + len(block))
        for local, row in enumerate(rows):
            if is_noise[row]:
                noise_parts.append(block.data[local])
        for local in np.flatnonzero(data_lines[rows]):
            row = rows[local]
            head = heads[row]
            line = block.data[local]
            if has_flag(flags[row], "IS_REVERSE"):
                line = line[:, ::-1]
            n = line.shape[1]
            start = nx // 2 - int(head["center_sample"]) if n < nx else 0
            if start < 0 or start + n > nx:
                raise InvalidDataError(
                    f"acquisition {row} has {n} samples centred at {head['center_sample']}, which does not fit "
                    f"the encoded matrix of {nx}", mrd.path)
            outer = tuple(int(head["idx"][d]) for d, k in zip(OUTER_DIMS, keep, strict=True) if k)
            z = int(head["idx"]["kspace_encode_step_2"]) + oz
            y = int(head["idx"]["kspace_encode_step_1"]) + oy
            if line.shape[0] != coils:
                raise InvalidDataError(f"acquisition {row} has {line.shape[0]} channels, others {coils}", mrd.path)
            if calib_any[row] and calibration is not None:
                calibration[(*outer, slice(None), z, y, slice(start, start + n))] = line
            if not calib_only[row]:
                kspace[(*outer, slice(None), z, y, slice(start, start + n))] = line
                mask[(*outer, z, y)] = True
    noise = np.concatenate(noise_parts, axis=1) if noise_parts else None
    return SortedKSpace(kspace, mask, calibration, noise, dims)
