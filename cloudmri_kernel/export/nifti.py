r"""MRD image series to a NIfTI-1 volume with the scanner geometry in its affine.

NIfTI world coordinates are RAS+ (x to the patient's right, y anterior, z head); MRD and DICOM use LPS+, so
the first two world axes change sign. Voxel :math:`(i, j, k)` is column :math:`i` (along ``read_dir``), row
:math:`j` (along ``phase_dir``) of slice :math:`k` (slices sorted along ``slice_dir``), the same pixel as
DICOM's (row ``j``, column ``i``) of the ``k``-th instance:

.. math:: A = \mathrm{diag}(-1, -1, 1, 1)
          \begin{pmatrix} d_x\,\mathbf r & d_y\,\mathbf p & \mathbf s & \mathbf x_0 \\ 0 & 0 & 0 & 1\end{pmatrix}

with :math:`\mathbf r`, :math:`\mathbf p` the read and phase directions, :math:`\mathbf s` the step from one
slice to the next (``slice_dir`` times the slice spacing, which may exceed the thickness), and
:math:`\mathbf x_0` the centre of voxel (0, 0, 0) in LPS. qform and sform both hold it, with code 1
(scanner-based anatomical coordinates).

References:
    NIfTI-1 data format, nifti1.h (https://nifti.nimh.nih.gov/nifti-1/).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.export.dicom import Plane, series_planes
from cloudmri_kernel.mrd.header import Header
from cloudmri_kernel.mrd.writer import AtomicOutput

#: LPS (MRD, DICOM) to RAS (NIfTI) world coordinates.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Largest deviation in mm of a slice from the regular grid NIfTI needs.
GRID_TOLERANCE_MM = 1e-3


def _slice_step(planes: list[Plane]) -> np.ndarray:
    """The vector from one slice to the next, after checking that the slices form one regular grid."""
    first = planes[0]
    for plane in planes[1:]:
        if (plane.pixels.shape != first.pixels.shape or not np.allclose(plane.row_dir, first.row_dir, atol=1e-4)
                or not np.allclose(plane.column_dir, first.column_dir, atol=1e-4)
                or not np.allclose(plane.pixel_spacing, first.pixel_spacing, atol=1e-4)):
            raise InvalidDataError(f"image {plane.image} differs in matrix, orientation or pixel spacing from "
                                   f"image {first.image}: a NIfTI volume needs one grid; export DICOM instead")
    if len(planes) == 1:
        return first.normal * (first.thickness or 1.0)
    offsets = np.array([p.first_voxel - first.first_voxel for p in planes])
    step = offsets[-1] / (len(planes) - 1)
    if np.linalg.norm(step) < GRID_TOLERANCE_MM:
        raise InvalidDataError(f"{len(planes)} images lie at the same location (several contrasts, phases or "
                               "repetitions?): export them one volume at a time")
    deviation = np.abs(offsets - np.outer(np.arange(len(planes)), step)).max()
    if deviation > GRID_TOLERANCE_MM:
        locations = ", ".join(f"{p.location:.3f}" for p in planes)
        raise InvalidDataError(f"the slices are not evenly spaced on one line (off by up to {deviation:.3g} mm; "
                               f"locations {locations} mm): a NIfTI volume needs a regular grid; export DICOM")
    return step


def nifti_affine(planes: list[Plane]) -> np.ndarray:
    """The 4×4 voxel-to-RAS affine of slices sorted along their normal (see the module docstring)."""
    first = planes[0]
    dy, dx = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = first.row_dir * dx
    lps[:3, 1] = first.column_dir * dy
    lps[:3, 2] = _slice_step(planes)
    lps[:3, 3] = first.first_voxel
    return LPS_TO_RAS @ lps


def export_nifti(headers: np.ndarray, data: np.ndarray, mrd_header: Header, path: str | Path) -> Path:
    """Write an MRD image series as one NIfTI-1 volume (x, y, slices) of float32 magnitudes.

    Channels are combined by root-sum-of-squares; ``descrip`` holds the protocol name. The file is written
    under a temporary name and renamed into place; ``.nii.gz`` is gzip-compressed.

    Args:
        headers: MRD image headers (n,), as from ``MRDFile.read_images``.
        data: image data (n, channels, z, y, x).
        mrd_header: the MRD XML header (``MRDFile.header``).
        path: a ``.nii`` or ``.nii.gz`` file.

    Raises:
        InvalidDataError: headers without valid geometry, or slices that are not one regular grid.
        UsageError: a path that is not ``.nii``/``.nii.gz``, or whose directory does not exist.
    """
    path = Path(path)
    compressed = path.name.endswith(".nii.gz")
    if not (compressed or path.suffix == ".nii"):
        raise UsageError("a NIfTI file name ends in .nii or .nii.gz", path)
    planes = series_planes(headers, data)
    affine = nifti_affine(planes)
    volume = np.stack([p.pixels for p in planes], axis=-1).transpose(1, 0, 2).astype(np.float32)
    measurement = mrd_header.measurementInformation
    return write_nifti(volume, affine, path,
                       ((measurement and measurement.protocolName) or "Cloud-MRI reconstruction")[:79])


def write_nifti(volume: np.ndarray, affine: np.ndarray, path: Path, description: str,
                intent: int | None = None) -> Path:
    """Write a volume with its affine as both qform and sform (scanner coordinates, mm), atomically; ``.nii.gz``
    is gzip-compressed (without a timestamp, so equal content gives equal bytes)."""
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    if intent is not None:
        image.header.set_intent(intent)
    image.header["descrip"] = description
    content = image.to_bytes()
    output = AtomicOutput(path)
    try:
        output.temporary.write_bytes(gzip.compress(content, mtime=0) if path.name.endswith(".nii.gz") else content)
    except BaseException:
        output.discard()
        raise
    output.commit()
    return path
