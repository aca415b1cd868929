"""Building MRD content from plain arrays: headers from a few geometry numbers, acquisitions from k-space.

Every importer (NumPy, fastMRI, the phantom simulator) goes through these two functions, so the flags,
counters and geometry they write are the same and are checked in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ismrmrd.xsd as xsd
import numpy as np
from ismrmrd.hdf5 import acquisition_header_dtype

from cloudmri_kernel.mrd.reader import flag_mask

GAMMA_H1_HZ_PER_T = 42.576e6


@dataclass
class Geometry:
    """What an importer knows of an acquisition, in the units of the MRD header.

    ``encoded_matrix`` is (x, y, z) of k-space as stored (x includes readout oversampling);
    ``recon_matrix`` and the fields of view are those of the final image.
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    coils: int
    slices: int = 1
    trajectory: str = "cartesian"
    acceleration: tuple[int, int] = (1, 1)
    calibration_mode: str | None = None
    field_strength_t: float = 3.0
    vendor: str | None = None
    model: str | None = None
    institution: str | None = None
    protocol: str | None = None
    tr_ms: float | None = None
    te_ms: float | None = None
    flip_angle_deg: float | None = None
    user_parameters: dict[str, float | int | str] = field(default_factory=dict)


def _limit(maximum: int, center: int | None = None) -> xsd.limitType:
    return xsd.limitType(minimum=0, maximum=max(0, maximum), center=maximum // 2 if center is None else center)


def make_header(geometry: Geometry, repetitions: int = 1, contrasts: int = 1) -> xsd.ismrmrdHeader:
    """An MRD header for the given geometry, valid against the ISMRMRD schema."""
    g = geometry
    ex, ey, ez = g.encoded_matrix
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_0=_limit(ex - 1, ex // 2),
        kspace_encoding_step_1=_limit(ey - 1, ey // 2),
        kspace_encoding_step_2=_limit(ez - 1, ez // 2),
        slice=_limit(g.slices - 1, 0),
        repetition=_limit(repetitions - 1, 0),
        contrast=_limit(contrasts - 1, 0),
        average=_limit(0, 0),
        phase=_limit(0, 0),
        set=_limit(0, 0),
        segment=_limit(0, 0),
    )
    parallel = None
    if g.acceleration != (1, 1) or g.calibration_mode:
        parallel = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(
                kspace_encoding_step_1=g.acceleration[0], kspace_encoding_step_2=g.acceleration[1]),
            calibrationMode=xsd.calibrationModeType(g.calibration_mode) if g.calibration_mode else None,
        )
    encoding = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=ex, y=ey, z=ez),
            fieldOfView_mm=xsd.fieldOfViewMm(x=g.encoded_fov_mm[0], y=g.encoded_fov_mm[1], z=g.encoded_fov_mm[2]),
        ),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=g.recon_matrix[0], y=g.recon_matrix[1], z=g.recon_matrix[2]),
            fieldOfView_mm=xsd.fieldOfViewMm(x=g.recon_fov_mm[0], y=g.recon_fov_mm[1], z=g.recon_fov_mm[2]),
        ),
        encodingLimits=limits,
        trajectory=xsd.trajectoryType(g.trajectory),
        parallelImaging=parallel,
    )
    sequence = None
    if g.tr_ms is not None or g.te_ms is not None or g.flip_angle_deg is not None:
        sequence = xsd.sequenceParametersType(
            TR=[g.tr_ms] if g.tr_ms is not None else [],
            TE=[g.te_ms] if g.te_ms is not None else [],
            flipAngle_deg=[g.flip_angle_deg] if g.flip_angle_deg is not None else [],
        )
    user = None
    if g.user_parameters:
        user = xsd.userParametersType(
            userParameterLong=[xsd.userParameterLongType(name=k, value=v)
                               for k, v in g.user_parameters.items() if isinstance(v, int)],
            userParameterDouble=[xsd.userParameterDoubleType(name=k, value=v)
                                 for k, v in g.user_parameters.items() if isinstance(v, float)],
            userParameterString=[xsd.userParameterStringType(name=k, value=v)
                                 for k, v in g.user_parameters.items() if isinstance(v, str)],
        )
    # <version> is left out: it names the C++ library's schema version, which differs between releases
    # (1.8 writes 8 and refuses any other), and it is optional.
    return xsd.ismrmrdHeader(
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor=g.vendor, systemModel=g.model, systemFieldStrength_T=g.field_strength_t,
            receiverChannels=g.coils, institutionName=g.institution,
        ),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(GAMMA_H1_HZ_PER_T * g.field_strength_t))),
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType.HFS, protocolName=g.protocol),
        encoding=[encoding],
        sequenceParameters=sequence,
        userParameters=user,
    )


def new_acquisition_headers(n: int, channels: int, samples: int, trajectory_dimensions: int = 0) -> np.ndarray:
    """``n`` acquisition headers with the version, sizes and an axial, isocentre orientation filled in."""
    headers = np.zeros(n, acquisition_header_dtype)
    headers["version"] = 1
    headers["number_of_samples"] = samples
    headers["available_channels"] = channels
    headers["active_channels"] = channels
    headers["center_sample"] = samples // 2
    headers["trajectory_dimensions"] = trajectory_dimensions
    headers["sample_time_us"] = 5.0
    headers["read_dir"] = (1.0, 0.0, 0.0)
    headers["phase_dir"] = (0.0, 1.0, 0.0)
    headers["slice_dir"] = (0.0, 0.0, 1.0)
    headers["scan_counter"] = np.arange(1, n + 1)
    for word in range(min(channels, 64 * 16) // 64 + 1):
        bits = min(64, channels - 64 * word)
        if bits > 0:
            headers["channel_mask"][:, word] = np.uint64((1 << bits) - 1)
    return headers


def cartesian_acquisitions(
    kspace: np.ndarray,
    sampled: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
    slice_positions_mm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One acquisition per sampled (slice, kz, ky) line of a Cartesian k-space array.

    Args:
        kspace: complex (slices, coils, kz, ky, kx).
        sampled: bool (slices, kz, ky), lines that were acquired; default: lines that are not all zero.
        calibration: bool (slices, kz, ky), lines in the autocalibration region. A calibration line that is
            also sampled is flagged ``IS_PARALLEL_CALIBRATION_AND_IMAGING``, one that is not sampled
            ``IS_PARALLEL_CALIBRATION`` (and then kept for calibration only).
        slice_positions_mm: (slices,) offsets along the slice direction.

    Returns:
        (headers, data): acquisition headers (n,) and samples (n, coils, kx).
    """
    kspace = np.asarray(kspace)
    if kspace.ndim != 5:
        raise ValueError(f"k-space must be (slices, coils, kz, ky, kx), got shape {kspace.shape}")
    slices, coils, nz, ny, nx = kspace.shape
    if sampled is None:
        sampled = np.abs(kspace).max(axis=(1, 4)) > 0
    calibration = np.zeros_like(sampled) if calibration is None else calibration
    acquired = sampled | calibration
    s_idx, z_idx, y_idx = np.nonzero(acquired)
    headers = new_acquisition_headers(len(s_idx), coils, nx)
    headers["idx"]["slice"] = s_idx
    headers["idx"]["kspace_encode_step_2"] = z_idx
    headers["idx"]["kspace_encode_step_1"] = y_idx
    flags = np.zeros(len(s_idx), np.uint64)
    in_calibration = calibration[s_idx, z_idx, y_idx]
    in_imaging = sampled[s_idx, z_idx, y_idx]
    flags[in_calibration & in_imaging] |= flag_mask("IS_PARALLEL_CALIBRATION_AND_IMAGING")
    flags[in_calibration & ~in_imaging] |= flag_mask("IS_PARALLEL_CALIBRATION")
    for s in range(slices):
        where = np.flatnonzero(s_idx == s)
        if len(where):
            flags[where[0]] |= flag_mask("FIRST_IN_SLICE")
            flags[where[-1]] |= flag_mask("LAST_IN_SLICE")
    if len(flags):
        flags[-1] |= flag_mask("LAST_IN_MEASUREMENT")
    headers["flags"] = flags
    if slice_positions_mm is not None:
        headers["position"][:, 2] = np.asarray(slice_positions_mm, np.float32)[s_idx]
    data = np.ascontiguousarray(kspace[s_idx, :, z_idx, y_idx, :].astype(np.complex64, copy=False))
    return headers, data
