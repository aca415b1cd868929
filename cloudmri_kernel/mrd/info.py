"""A summary of an MRD file for people and scripts: ``cloudmri info``."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from cloudmri_kernel.mrd.reader import ACQ_FLAGS, MRDFile


@dataclass
class MRDSummary:
    """What a researcher checks first about a raw file. Sizes are (x, y, z); FOV in mm."""

    path: str
    vendor: str | None
    model: str | None
    field_strength_t: float | None
    institution: str | None
    protocol: str | None
    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    coils: int | None
    trajectory: str
    acceleration: tuple[int, int]
    calibration_mode: str | None
    encodings: int
    acquisitions: int
    noise_acquisitions: int
    slices: int
    repetitions: int
    contrasts: int
    tr_ms: list[float]
    te_ms: list[float]
    flags: dict[str, int] = field(default_factory=dict)
    arrays: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _xyz(obj) -> tuple:
    return (obj.x, obj.y, obj.z)


def flag_histogram(flags: np.ndarray) -> dict[str, int]:
    """How many acquisitions carry each MRD flag (``NONE`` counts those without any)."""
    flags = np.asarray(flags, dtype=np.uint64)
    counts: Counter[str] = Counter()
    for name, bit in sorted(ACQ_FLAGS.items(), key=lambda item: item[1]):
        n = int(((flags >> np.uint64(bit - 1)) & np.uint64(1)).sum())
        if n:
            counts[name] = n
    none = int((flags == 0).sum())
    if none:
        counts["NONE"] = none
    return dict(counts)


def summarize(mrd: MRDFile) -> MRDSummary:
    """Summarize header and acquisitions; reads only the acquisition headers, never the samples."""
    h = mrd.header
    enc = h.encoding[0]
    system = h.acquisitionSystemInformation
    heads = mrd.acquisition_headers()
    flags = heads["flags"]
    noise_bit = np.uint64(1 << (ACQ_FLAGS["IS_NOISE_MEASUREMENT"] - 1))
    pi = enc.parallelImaging
    accel = (1, 1)
    if pi is not None and pi.accelerationFactor is not None:
        accel = (int(pi.accelerationFactor.kspace_encoding_step_1), int(pi.accelerationFactor.kspace_encoding_step_2))
    coils = system.receiverChannels if system is not None else None
    if coils is None and len(heads):
        coils = int(heads["active_channels"].max())
    seq = h.sequenceParameters
    idx = heads["idx"]

    def extent(counter: str) -> int:
        return int(idx[counter].max()) + 1 if len(heads) else 0

    return MRDSummary(
        path=str(mrd.path),
        vendor=system.systemVendor if system else None,
        model=system.systemModel if system else None,
        field_strength_t=system.systemFieldStrength_T if system else None,
        institution=system.institutionName if system else None,
        protocol=h.measurementInformation.protocolName if h.measurementInformation else None,
        encoded_matrix=_xyz(enc.encodedSpace.matrixSize),
        recon_matrix=_xyz(enc.reconSpace.matrixSize),
        encoded_fov_mm=_xyz(enc.encodedSpace.fieldOfView_mm),
        recon_fov_mm=_xyz(enc.reconSpace.fieldOfView_mm),
        coils=coils,
        trajectory=enc.trajectory.value if enc.trajectory is not None else "unknown",
        acceleration=accel,
        calibration_mode=pi.calibrationMode.value if pi is not None and pi.calibrationMode is not None else None,
        encodings=len(h.encoding),
        acquisitions=len(heads),
        noise_acquisitions=int(((flags & noise_bit) != 0).sum()),
        slices=extent("slice"),
        repetitions=extent("repetition"),
        contrasts=extent("contrast"),
        tr_ms=list(seq.TR) if seq is not None else [],
        te_ms=list(seq.TE) if seq is not None else [],
        flags=flag_histogram(flags),
        arrays=mrd.array_names,
    )
