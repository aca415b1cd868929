"""Importer for NumPy k-space (``.npy`` / ``.npz``) with a JSON or YAML sidecar that gives the geometry.

Cartesian arrays are complex with axes (coils, ky, kx), (slices, coils, ky, kx) or
(slices, coils, kz, ky, kx); readout oversampling, if any, is in kx and declared in the sidecar. An
``.npz`` may add ``mask`` (bool, broadcastable to (slices, kz, ky)) for undersampled data. Non-Cartesian
data is an ``.npz`` with ``kspace`` (slices, coils, readouts, samples) and ``trajectory``
(readouts, samples, 2 or 3) in cycles per pixel, with the sidecar's ``trajectory`` set to radial or spiral.

Example sidecar ``knee.yaml`` beside ``knee.npy``::

    fov_mm: [160, 160, 3]
    oversampling: 2
    field_strength_t: 3.0
    acceleration: [4, 1]
    calibration_lines: 24
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.build import Geometry, cartesian_acquisitions, make_header, new_acquisition_headers
from cloudmri_kernel.mrd.formats import RawContent
from cloudmri_kernel.mrd.reader import AcquisitionBlock, flag_mask

SIDECAR_SUFFIXES = (".json", ".yaml", ".yml")


class Sidecar(BaseModel):
    """Geometry of NumPy k-space. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    fov_mm: tuple[float, float, float] = Field(description="reconstructed field of view x, y, z (slice thickness)")
    matrix: tuple[int, int, int] | None = Field(default=None, description="recon matrix; default from k-space")
    oversampling: int = Field(default=1, ge=1, le=4, description="readout oversampling factor in kx")
    slice_gap_mm: float = 0.0
    trajectory: Literal["cartesian", "radial", "goldenangle", "spiral", "other"] = "cartesian"
    acceleration: tuple[int, int] = (1, 1)
    calibration_lines: int = Field(default=0, ge=0, description="fully sampled centre lines used for calibration")
    field_strength_t: float = Field(default=3.0, gt=0)
    vendor: str | None = None
    model: str | None = None
    institution: str | None = None
    protocol: str | None = None
    tr_ms: float | None = None
    te_ms: float | None = None
    flip_angle_deg: float | None = None


def find_sidecar(path: Path, sidecar: Path | None = None) -> Path:
    if sidecar is not None:
        if not sidecar.is_file():
            raise UsageError("no such sidecar file", sidecar)
        return sidecar
    for suffix in SIDECAR_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"NumPy k-space needs a geometry sidecar ({path.stem}.yaml or .json beside it, or --sidecar FILE) "
        "with at least 'fov_mm: [x, y, z]'", path)


def load_sidecar(path: Path) -> Sidecar:
    try:
        text = path.read_text()
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return Sidecar.model_validate(content or {})
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"the sidecar cannot be parsed ({exc})", path) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid sidecar ({problems})", path) from None


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npy":
            return {"kspace": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidDataError(f"cannot be read as a NumPy file ({exc})", path) from None


def read_numpy(path: Path, sidecar: Path | None = None) -> RawContent:
    """Read NumPy k-space and its sidecar into MRD content."""
    geometry = load_sidecar(find_sidecar(path, sidecar))
    arrays = _load_arrays(path)
    if "kspace" not in arrays:
        raise InvalidDataError(f"the archive has no 'kspace' array (found: {', '.join(arrays) or 'none'})", path)
    kspace = arrays["kspace"]
    if not np.iscomplexobj(kspace):
        raise InvalidDataError(
            f"k-space must be complex (complex64 or complex128), got {kspace.dtype}: "
            "combine real and imaginary parts with `re + 1j * im` before saving", path)
    if geometry.trajectory != "cartesian":
        return _read_noncartesian(path, kspace, arrays.get("trajectory"), geometry)
    if kspace.ndim not in (3, 4, 5):
        raise InvalidDataError(
            f"Cartesian k-space must have 3 to 5 axes ((slices,) coils, (kz,) ky, kx), got shape {kspace.shape}",
            path)
    if kspace.ndim == 3:
        kspace = kspace[np.newaxis]
    if kspace.ndim == 4:
        kspace = kspace[:, :, np.newaxis]
    slices, coils, nz, ny, nx = kspace.shape
    sampled = np.abs(kspace).max(axis=(1, 4)) > 0
    if "mask" in arrays:
        try:
            sampled &= np.broadcast_to(np.asarray(arrays["mask"], bool), sampled.shape)
        except ValueError:
            raise InvalidDataError(
                f"'mask' of shape {arrays['mask'].shape} does not broadcast to (slices, kz, ky) {sampled.shape}",
                path) from None
    calibration = None
    if geometry.calibration_lines:
        calibration = np.zeros_like(sampled)
        half = geometry.calibration_lines // 2
        calibration[:, :, max(0, ny // 2 - half):ny // 2 - half + geometry.calibration_lines] = True
    heads, samples = cartesian_acquisitions(kspace, sampled, calibration,
                                            _slice_positions(geometry, slices))
    header = make_header(_geometry(geometry, (nx, ny, nz), coils, slices))
    block = AcquisitionBlock(0, heads, list(samples), [np.zeros((nx, 0), np.float32)] * len(heads))
    return RawContent(header, [block], source_format="numpy")


def _slice_positions(geometry: Sidecar, slices: int) -> np.ndarray:
    spacing = geometry.fov_mm[2] + geometry.slice_gap_mm
    return (np.arange(slices) - (slices - 1) / 2) * spacing


def _geometry(sidecar: Sidecar, encoded: tuple[int, int, int], coils: int, slices: int) -> Geometry:
    nx, ny, nz = encoded
    recon = sidecar.matrix or (nx // sidecar.oversampling, ny, nz)
    fov = sidecar.fov_mm
    return Geometry(
        encoded_matrix=encoded, recon_matrix=recon,
        encoded_fov_mm=(fov[0] * sidecar.oversampling, fov[1], fov[2]), recon_fov_mm=fov,
        coils=coils, slices=slices, trajectory=sidecar.trajectory, acceleration=sidecar.acceleration,
        calibration_mode="embedded" if sidecar.calibration_lines and sidecar.acceleration != (1, 1) else None,
        field_strength_t=sidecar.field_strength_t, vendor=sidecar.vendor, model=sidecar.model,
        institution=sidecar.institution, protocol=sidecar.protocol, tr_ms=sidecar.tr_ms, te_ms=sidecar.te_ms,
        flip_angle_deg=sidecar.flip_angle_deg,
    )


def _read_noncartesian(path: Path, kspace: np.ndarray, trajectory: np.ndarray | None,
                       geometry: Sidecar) -> RawContent:
    if trajectory is None:
        raise InvalidDataError(f"{geometry.trajectory} k-space needs a 'trajectory' array in the .npz", path)
    if kspace.ndim == 3:
        kspace = kspace[np.newaxis]
    if kspace.ndim != 4:
        raise InvalidDataError(f"non-Cartesian k-space must be ((slices,) coils, readouts, samples), got "
                               f"shape {kspace.shape}", path)
    slices, coils, readouts, samples = kspace.shape
    if trajectory.ndim != 3 or trajectory.shape[:2] != (readouts, samples) or trajectory.shape[2] not in (2, 3):
        raise InvalidDataError(f"'trajectory' must be (readouts={readouts}, samples={samples}, 2 or 3), got "
                               f"{trajectory.shape}", path)
    dims = trajectory.shape[2]
    side = samples // geometry.oversampling
    matrix = geometry.matrix or (side, side, 1)
    heads = new_acquisition_headers(slices * readouts, coils, samples, dims)
    heads["idx"]["slice"] = np.repeat(np.arange(slices), readouts)
    heads["idx"]["kspace_encode_step_1"] = np.tile(np.arange(readouts), slices)
    heads["position"][:, 2] = np.repeat(_slice_positions(geometry, slices), readouts)
    heads["flags"][-1] |= flag_mask("LAST_IN_MEASUREMENT")
    data = [kspace[s, :, r] for s in range(slices) for r in range(readouts)]
    traj = [trajectory[r].astype(np.float32) for _ in range(slices) for r in range(readouts)]
    header = make_header(_geometry(geometry.model_copy(update={"oversampling": 1}), matrix, coils, slices))
    header.encoding[0].encodingLimits.kspace_encoding_step_1.maximum = readouts - 1
    header.encoding[0].encodingLimits.kspace_encoding_step_1.center = 0
    return RawContent(header, [AcquisitionBlock(0, heads, data, traj)], source_format="numpy")
