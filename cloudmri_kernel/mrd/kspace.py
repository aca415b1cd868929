"""Sorting acquisitions into a Cartesian k-space array by their encoding counters.

Imaging lines, calibration-only lines and noise scans are separated by their MRD flags. Lines are placed so
that the header's k-space centre (``encodingLimits.*.center``) lands at index N//2, and samples so that
``center_sample`` lands at kx = Nx//2, which handles partial Fourier and asymmetric echoes. Reversed lines
(``IS_REVERSE``, e.g. EPI) are flipped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ismrmrd.hdf5 import acquisition_header_dtype

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
        headers: acquisition headers shaped like the loop-counter axes: for each image, the first imaging
            acquisition that went into it (its position, orientation and counters describe the image).
    """

    kspace: np.ndarray
    mask: np.ndarray
    calibration: np.ndarray | None
    noise: np.ndarray | None
    dims: tuple[str, ...]
    headers: np.ndarray

    def axis(self, name: str) -> int:
        return self.dims.index(name)


@dataclass(frozen=True)
class _Plan:
    """Shape of the output and where each counter lands."""

    outer_sizes: tuple[int, ...]  # one per OUTER_DIMS entry
    keep: tuple[bool, ...]  # which OUTER_DIMS become axes
    coils: int
    nz: int
    ny: int
    nx: int
    offset_z: int
    offset_y: int

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(d for d, k in zip(OUTER_DIMS, self.keep, strict=True) if k) + ("coil", "kz", "ky", "kx")

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return tuple(n for n, k in zip(self.outer_sizes, self.keep, strict=True) if k)


class _OutsidePlan(Exception):
    """An acquisition does not fit a plan made from the header: plan again from the data."""


def _size_and_offset(limit, matrix: int, highest: int, lowest: int) -> tuple[int, int]:
    """Axis length and the shift that puts the header's centre at length//2."""
    size = max(int(matrix), highest + 1)
    center = int(limit.center) if limit is not None and limit.center is not None else size // 2
    offset = size // 2 - center if 0 < center < size else 0
    if lowest + offset < 0 or highest + offset >= size:
        offset = 0
    return size, offset


def _make_plan(enc, highest: dict[str, int], lowest: dict[str, int], coils: int, samples: int,
               squeeze: bool) -> _Plan:
    limits = enc.encodingLimits
    ny, oy = _size_and_offset(limits.kspace_encoding_step_1 if limits else None, enc.encodedSpace.matrixSize.y,
                              highest["kspace_encode_step_1"], lowest["kspace_encode_step_1"])
    nz, oz = _size_and_offset(limits.kspace_encoding_step_2 if limits else None, enc.encodedSpace.matrixSize.z,
                              highest["kspace_encode_step_2"], lowest["kspace_encode_step_2"])
    outer = tuple(highest[d] + 1 for d in OUTER_DIMS)
    keep = tuple(d == "slice" or n > 1 or not squeeze for d, n in zip(OUTER_DIMS, outer, strict=True))
    return _Plan(outer, keep, coils, nz, ny, max(int(enc.encodedSpace.matrixSize.x), samples), oz, oy)


_LIMIT_NAMES = {"kspace_encode_step_1": "kspace_encoding_step_1", "kspace_encode_step_2": "kspace_encoding_step_2",
                **{d: d for d in OUTER_DIMS}}


def _plan_from_header(header, enc, squeeze: bool) -> _Plan | None:
    """The plan the header announces, or None when it leaves a counter's limits or the coil count open."""
    limits = enc.encodingLimits
    system = header.acquisitionSystemInformation
    if limits is None or system is None or not system.receiverChannels:
        return None
    highest, lowest = {}, {}
    for counter, name in _LIMIT_NAMES.items():
        limit = getattr(limits, name)
        if limit is None or limit.maximum is None:
            if counter not in ("kspace_encode_step_1", "kspace_encode_step_2"):
                return None
            limit_max = (enc.encodedSpace.matrixSize.y if counter.endswith("1") else enc.encodedSpace.matrixSize.z)
            highest[counter], lowest[counter] = int(limit_max) - 1, 0
        else:
            highest[counter], lowest[counter] = int(limit.maximum), int(limit.minimum or 0)
    return _make_plan(enc, highest, lowest, int(system.receiverChannels), 0, squeeze)


def _plan_from_data(mrd: MRDFile, enc, encoding: int, squeeze: bool) -> _Plan:
    heads = mrd.acquisition_headers()
    lines = _imaging_lines(heads, encoding)
    if not lines.any():
        raise InvalidDataError(f"no imaging acquisitions in encoding space {encoding}", mrd.path)
    idx = heads["idx"][lines]
    highest = {c: int(idx[c].max()) for c in _LIMIT_NAMES}
    lowest = {c: int(idx[c].min()) for c in _LIMIT_NAMES}
    return _make_plan(enc, highest, lowest, int(heads["active_channels"][lines].max()),
                      int(heads["number_of_samples"][lines].max()), squeeze)


def _imaging_lines(heads: np.ndarray, encoding: int) -> np.ndarray:
    return (heads["encoding_space_ref"] == encoding) & ((heads["flags"].astype(np.uint64) & _SKIPPED) == 0)


def read_cartesian(mrd: MRDFile, encoding: int = 0, squeeze: bool = True) -> SortedKSpace:
    """Read all acquisitions of one encoding space into a sorted Cartesian k-space array.

    The array is allocated once from the header's encoding limits and filled in one pass over the file, chunk by
    chunk, so memory stays close to the array's own size. When the header's limits are missing or wrong, the
    acquisition headers are read first to size the array.

    Args:
        mrd: an open file.
        encoding: which ``<encoding>`` of the header (``encoding_space_ref``).
        squeeze: drop loop-counter axes of length one (except ``slice``).
    """
    header = mrd.header
    if encoding >= len(header.encoding):
        raise InvalidDataError(f"the header has {len(header.encoding)} encoding(s), not {encoding + 1}", mrd.path)
    if mrd.number_of_acquisitions == 0:
        raise InvalidDataError("the file holds no acquisitions", mrd.path)
    enc = header.encoding[encoding]
    plan = _plan_from_header(header, enc, squeeze)
    if plan is not None:
        try:
            return _fill(mrd, plan, encoding)
        except _OutsidePlan:
            pass
    return _fill(mrd, _plan_from_data(mrd, enc, encoding, squeeze), encoding)


def _fill(mrd: MRDFile, plan: _Plan, encoding: int) -> SortedKSpace:
    kspace = np.zeros((*plan.outer_shape, plan.coils, plan.nz, plan.ny, plan.nx), np.complex64)
    mask = np.zeros((*plan.outer_shape, plan.nz, plan.ny), bool)
    headers = np.zeros(plan.outer_shape, acquisition_header_dtype)
    described = np.zeros(plan.outer_shape, bool)
    calibration: np.ndarray | None = None
    noise_parts: list[np.ndarray] = []
    imaging_seen = False
    kept = [d for d, k in zip(OUTER_DIMS, plan.keep, strict=True) if k]
    dropped = [d for d, k in zip(OUTER_DIMS, plan.keep, strict=True) if not k]
    for block in mrd.iter_acquisitions():
        heads = block.headers
        flags = heads["flags"].astype(np.uint64)
        for local in np.flatnonzero(has_flag(flags, "IS_NOISE_MEASUREMENT")):
            noise_parts.append(block.data[local])
        lines = np.flatnonzero(_imaging_lines(heads, encoding))
        calib_only = has_flag(flags, "IS_PARALLEL_CALIBRATION")
        calib_any = calib_only | has_flag(flags, "IS_PARALLEL_CALIBRATION_AND_IMAGING")
        reverse = has_flag(flags, "IS_REVERSE")
        for local in lines:
            head, line, row = heads[local], block.data[local], block.start + local
            idx = head["idx"]
            if line.shape[0] != plan.coils or any(idx[d] for d in dropped):
                raise _OutsidePlan
            outer = tuple(int(idx[d]) for d in kept)
            z = int(idx["kspace_encode_step_2"]) + plan.offset_z
            y = int(idx["kspace_encode_step_1"]) + plan.offset_y
            if any(o >= n for o, n in zip(outer, plan.outer_shape, strict=True)) or z >= plan.nz or y >= plan.ny:
                raise _OutsidePlan
            n = line.shape[1]
            start = plan.nx // 2 - int(head["center_sample"]) if n < plan.nx else 0
            if n > plan.nx:
                raise _OutsidePlan
            if start < 0 or start + n > plan.nx:
                raise InvalidDataError(
                    f"acquisition {row} has {n} samples centred at {head['center_sample']}, which does not fit "
                    f"the encoded matrix of {plan.nx}", mrd.path)
            if reverse[local]:
                line = line[:, ::-1]
            if not described[outer]:
                headers[outer], described[outer] = head, True
            where = (*outer, slice(None), z, y, slice(start, start + n))
            if calib_any[local]:
                if calibration is None:
                    calibration = np.zeros_like(kspace)
                calibration[where] = line
            if not calib_only[local]:
                kspace[where] = line
                mask[(*outer, z, y)] = True
                imaging_seen = True
    if not imaging_seen:
        raise InvalidDataError(f"no imaging acquisitions in encoding space {encoding}", mrd.path)
    noise = np.concatenate(noise_parts, axis=1) if noise_parts else None
    return SortedKSpace(kspace, mask, calibration, noise, plan.dims, headers)
