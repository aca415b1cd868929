"""Validation of MRD files: the XSD schema, then the consistency of every acquisition with the header.

Checks, in order: the file opens as MRD; the header passes the ISMRMRD XSD and parses; every acquisition's
sample and trajectory arrays have the sizes its header announces; channel counts agree with the header;
encoding counters lie within the header's encoding limits; samples fit the encoded matrix; non-Cartesian
acquisitions carry a trajectory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cloudmri_kernel.errors import CloudMRIError
from cloudmri_kernel.mrd.header import schema_errors
from cloudmri_kernel.mrd.reader import MRDFile, flag_mask

_COUNTERS = {
    "kspace_encode_step_1": "kspace_encoding_step_1",
    "kspace_encode_step_2": "kspace_encoding_step_2",
    "average": "average",
    "slice": "slice",
    "contrast": "contrast",
    "phase": "phase",
    "repetition": "repetition",
    "set": "set",
    "segment": "segment",
}
_NOT_IMAGING = flag_mask("IS_NOISE_MEASUREMENT", "IS_NAVIGATION_DATA", "IS_PHASECORR_DATA",
                         "IS_HPFEEDBACK_DATA", "IS_RTFEEDBACK_DATA", "IS_DUMMYSCAN_DATA")
_MAX_LISTED = 5


@dataclass(frozen=True)
class Finding:
    """One problem: ``severity`` is ``error`` (the file is invalid) or ``warning``."""

    severity: str
    where: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _ranges(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:_MAX_LISTED])
    return shown + (f" and {len(indices) - _MAX_LISTED} more" if len(indices) > _MAX_LISTED else "")


def _check_acquisitions(mrd: MRDFile) -> list[Finding]:
    findings: list[Finding] = []
    header = mrd.header
    heads = mrd.acquisition_headers()
    if len(heads) == 0:
        return [Finding("warning", "acquisitions", "the file holds no acquisitions")]
    imaging = (heads["flags"].astype(np.uint64) & _NOT_IMAGING) == 0

    bad_version = np.flatnonzero(heads["version"] != 1)
    if len(bad_version):
        findings.append(Finding("warning", "acquisitions",
                                f"header version is not 1 in acquisitions {_ranges(bad_version)}"))
    refs = heads["encoding_space_ref"]
    bad_ref = np.flatnonzero(refs >= len(header.encoding))
    if len(bad_ref):
        findings.append(Finding("error", "acquisitions",
                                f"encoding_space_ref points past the header's {len(header.encoding)} encoding(s) "
                                f"in acquisitions {_ranges(bad_ref)}"))
    over_active = np.flatnonzero(heads["active_channels"] > heads["available_channels"])
    if len(over_active):
        findings.append(Finding("warning", "acquisitions",
                                f"active_channels exceeds available_channels in acquisitions {_ranges(over_active)}"))
    system = header.acquisitionSystemInformation
    if system is not None and system.receiverChannels:
        wrong = np.flatnonzero(imaging & (heads["active_channels"] != system.receiverChannels))
        if len(wrong):
            findings.append(Finding("error", "acquisitions",
                                    f"{len(wrong)} imaging acquisitions have a channel count other than the "
                                    f"header's receiverChannels={system.receiverChannels} "
                                    f"(acquisitions {_ranges(wrong)})"))

    for number, enc in enumerate(header.encoding):
        in_space = imaging & (refs == number)
        limits = enc.encodingLimits
        for counter, limit_name in _COUNTERS.items():
            limit = getattr(limits, limit_name, None) if limits is not None else None
            values = heads["idx"][counter]
            if limit is None or limit.maximum is None:
                if counter in ("kspace_encode_step_1", "kspace_encode_step_2"):
                    continue
                beyond = np.flatnonzero(in_space & (values > 0))
                if len(beyond):
                    findings.append(Finding("warning", f"encoding {number}",
                                            f"counter '{counter}' is used but the header gives no limit for it"))
                continue
            beyond = np.flatnonzero(in_space & ((values > limit.maximum) | (values < (limit.minimum or 0))))
            if len(beyond):
                findings.append(Finding("error", f"encoding {number}",
                                        f"counter '{counter}' outside the header's limits "
                                        f"[{limit.minimum}, {limit.maximum}] in acquisitions {_ranges(beyond)}"))
        trajectory = enc.trajectory.value if enc.trajectory is not None else "cartesian"
        if trajectory in ("cartesian", "epi"):
            too_long = np.flatnonzero(in_space & (heads["number_of_samples"] > enc.encodedSpace.matrixSize.x))
            if len(too_long):
                findings.append(Finding("error", f"encoding {number}",
                                        f"acquisitions {_ranges(too_long)} have more samples than the encoded "
                                        f"matrix x={enc.encodedSpace.matrixSize.x}"))
        else:
            missing = np.flatnonzero(in_space & (heads["trajectory_dimensions"] == 0))
            if len(missing):
                findings.append(Finding("error", f"encoding {number}",
                                        f"{trajectory} trajectory, but acquisitions {_ranges(missing)} carry no "
                                        "k-space coordinates (trajectory_dimensions=0)"))

    data_sizes, traj_sizes = mrd.stored_sizes()
    expected = 2 * heads["active_channels"].astype(np.int64) * heads["number_of_samples"]
    wrong = np.flatnonzero(data_sizes != expected)
    if len(wrong):
        findings.append(Finding("error", "acquisitions",
                                f"{len(wrong)} acquisitions store a number of samples other than their header's "
                                f"channels x samples (acquisitions {_ranges(wrong)})"))
    expected = heads["trajectory_dimensions"].astype(np.int64) * heads["number_of_samples"]
    wrong = np.flatnonzero(traj_sizes != expected)
    if len(wrong):
        findings.append(Finding("error", "acquisitions",
                                f"{len(wrong)} acquisitions store a trajectory size other than their header's "
                                f"samples x trajectory_dimensions (acquisitions {_ranges(wrong)})"))
    return findings


def validate_file(path: str | Path) -> list[Finding]:
    """All findings for one file; an empty list means valid."""
    try:
        mrd = MRDFile(path)
    except CloudMRIError as exc:
        return [Finding("error", "file", str(exc).removeprefix(f"{Path(path)}: "))]
    with mrd:
        try:
            findings = [Finding("error", "header", message) for message in schema_errors(mrd.xml)]
            if findings:
                return findings
            mrd.header  # noqa: B018 - parsing into the typed header is itself a check
            return _check_acquisitions(mrd)
        except CloudMRIError as exc:
            return [Finding("error", "file", str(exc).removeprefix(f"{mrd.path}: "))]
