"""Label maps drawn on a reconstructed series, exported beside the series itself: NIfTI and DICOM SEG.

A label map is ``(slices, y, x)`` uint8 as :meth:`cloudmri_widgets.Labeler.masks` gives it: 0 is unlabelled and
value ``i + 1`` the ``i``-th name of the vocabulary. Slice ``k`` is the ``k``-th slice along the slice normal,
the order in which :func:`~cloudmri_kernel.export.export_nifti` stacks the volume and
:func:`~cloudmri_kernel.export.export_dicom` numbers the instances (``[p.image for p in series_planes(…)]``
maps it to the stored MRD images).

* NIfTI: the label map on the image's own voxel grid (the same affine, qform and sform), with intent
  ``NIFTI_INTENT_LABEL``, so that a viewer overlays it on the exported image voxel for voxel.
* DICOM: a Segmentation object (SEG IOD, PS3.3 A.51) with one segment per vocabulary name that occurs, each
  frame referencing the SOPInstanceUID of the MR image it labels and carrying that image's position and
  orientation, written with highdicom.

References:
    NIfTI-1 data format, nifti1.h (https://nifti.nimh.nih.gov/nifti-1/).
    C. P. Bridge et al., "Highdicom: a Python library for standardized encoding of image annotations and machine
    learning model outputs in pathology and radiology", J. Digit. Imaging 35, 1719-1737 (2022).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cloudmri_kernel import __version__
from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.export.nifti import write_nifti
from cloudmri_kernel.mrd.writer import AtomicOutput

#: NIfTI intent code of a label map (nifti1.h NIFTI_INTENT_LABEL).
NIFTI_INTENT_LABEL = 1002


def _label_map(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.size == 0:
        raise InvalidDataError(f"a label map is (slices, y, x), got shape {masks.shape}")
    if not np.issubdtype(masks.dtype, np.integer) or masks.min() < 0 or masks.max() > 255:
        raise InvalidDataError(f"a label map holds label values 0…255 (dtype {masks.dtype}, range "
                               f"{masks.min()}…{masks.max()})")
    return masks.astype(np.uint8)


def labels_to_nifti(masks, reference, path: str | Path) -> Path:
    """Write a label map as a NIfTI-1 volume on the grid of an exported image series.

    Args:
        masks: the label map ``(slices, y, x)``, slices along the slice normal.
        reference: the series' exported NIfTI file (a path or a loaded ``nibabel`` image) or its 4×4 affine.
        path: a ``.nii`` or ``.nii.gz`` file, written under a temporary name and renamed into place.

    Raises:
        InvalidDataError: a label map that is not (slices, y, x) of 0…255, or whose shape is not the image's.
        UsageError: a path that does not end in ``.nii``/``.nii.gz``, or an affine that is not 4×4.
    """
    labels = _label_map(masks)
    path = Path(path)
    compressed = path.name.endswith(".nii.gz")
    if not (compressed or path.suffix == ".nii"):
        raise UsageError("a NIfTI file name ends in .nii or .nii.gz", path)
    volume = labels.transpose(2, 1, 0)  # (x, y, slices), as export_nifti stores the image
    if isinstance(reference, str | Path):
        reference = nib.load(reference)
    if hasattr(reference, "affine"):
        if tuple(reference.shape[:3]) != volume.shape:
            raise InvalidDataError(f"the label map (slices, y, x) = {labels.shape} does not fit the image, whose "
                                   f"NIfTI shape (x, y, slices) is {tuple(reference.shape[:3])}")
        affine = reference.affine
    else:
        affine = np.asarray(reference, np.float64)
        if affine.shape != (4, 4):
            raise UsageError(f"the reference affine must be 4×4, got shape {affine.shape}")
    return write_nifti(volume, affine, path, "Cloud-MRI labels", intent=NIFTI_INTENT_LABEL)


def _series_images(dicom_series_dir: Path) -> list:
    """The MR images of one exported series, sorted along the slice normal."""
    files = sorted(Path(dicom_series_dir).glob("*.dcm"))
    if not files:
        raise UsageError("holds no .dcm files: give the directory export_dicom wrote the series to",
                         dicom_series_dir)
    images = [pydicom.dcmread(file) for file in files]
    series = {str(ds.SeriesInstanceUID) for ds in images}
    if len(series) != 1:
        raise InvalidDataError(f"{dicom_series_dir} holds {len(series)} series ({sorted(series)}): label one "
                               "series at a time, each in its own directory")
    orientation = np.array([float(v) for v in images[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(images, key=lambda ds: float(np.array([float(v) for v in ds.ImagePositionPatient]) @ normal))


def labels_to_dicom_seg(masks, vocabulary: Mapping[str, str] | Sequence[str], dicom_series_dir: str | Path,
                        path: str | Path) -> Path:
    """Write a label map as a DICOM Segmentation of an exported DICOM MR series.

    Each vocabulary name that occurs in the map becomes a segment, numbered 1… in vocabulary order and
    labelled with the name (the Labeler's colour as its display colour when given); the property category
    and type are the generic SNOMED CT "Tissue", as the vocabulary is free text. The SEG's frames reference
    the MR images' SOP Instance UIDs; its study and patient are theirs; its UIDs are derived from the series
    UID and the map, so exporting the same labels again gives the same object.

    Args:
        masks: the label map ``(slices, y, x)``, slices along the slice normal (instance order).
        vocabulary: the label names in order, or ``{name: "#rrggbb"}``.
        dicom_series_dir: the directory :func:`~cloudmri_kernel.export.export_dicom` wrote the series to.
        path: the SEG file to write (under a temporary name, renamed into place).

    Raises:
        InvalidDataError: a map that does not fit the series, holds a value beyond the vocabulary, or is empty.
        UsageError: a directory without DICOM files.
    """
    labels = _label_map(masks)
    names = list(vocabulary)
    colours = dict(vocabulary) if isinstance(vocabulary, Mapping) else {}
    images = _series_images(Path(dicom_series_dir))
    frame = (len(images), int(images[0].Rows), int(images[0].Columns))
    if labels.shape != frame:
        raise InvalidDataError(f"the label map (slices, y, x) = {labels.shape} does not fit the DICOM series "
                               f"(instances, rows, columns) = {frame}")
    present = [int(v) for v in np.unique(labels) if v > 0]
    if not present:
        raise InvalidDataError("the label map is empty: draw something before exporting a segmentation")
    if present[-1] > len(names):
        raise InvalidDataError(f"the label map holds value {present[-1]}, but the vocabulary {names} has only "
                               f"{len(names)} name(s)")
    # Segment numbers must run 1…n: the values present, in vocabulary order, are renumbered.
    numbering = np.zeros(256, np.uint8)
    numbering[present] = np.arange(1, len(present) + 1)
    segments = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=names[value - 1][:64], segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        display_color=hd.color.CIELabColor.from_string(colours[names[value - 1]])
        if names[value - 1] in colours else None) for number, value in enumerate(present, start=1)]
    source_uid = str(images[0].SeriesInstanceUID)
    digest = hashlib.sha256(labels.tobytes() + "|".join(names).encode()).hexdigest()
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=numbering[labels], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=generate_uid(entropy_srcs=[source_uid, digest, "seg-series"]), series_number=100,
        sop_instance_uid=generate_uid(entropy_srcs=[source_uid, digest, "seg-instance"]), instance_number=1,
        manufacturer="Cloud-MRI Workbench", manufacturer_model_name="cloudmri_kernel",
        software_versions=__version__, device_serial_number="none", series_description="Cloud-MRI labels",
        content_label="LABELS", content_description="labels drawn in the Cloud-MRI Workbench")
    output = AtomicOutput(Path(path))
    try:
        seg.save_as(output.temporary, enforce_file_format=True)
    except BaseException:
        output.discard()
        raise
    output.commit()
    return Path(path)
