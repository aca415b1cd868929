r"""MRD image series to a DICOM MR series, and the patient-coordinate geometry every export shares.

Geometry (DICOM PS3.3 C.7.6.2, ISMRMRD image header):

* Coordinates are the patient's LPS+ system in mm (x to the patient's left, y posterior, z head), the same
  for MRD and DICOM.
* MRD ``position`` is the centre of the image block; DICOM ``ImagePositionPatient`` is the centre of the
  first transmitted voxel (row 0, column 0). With :math:`n_x` columns of :math:`d_x = \mathrm{FOV}_x/n_x` mm
  along ``read_dir`` and :math:`n_y` rows of :math:`d_y` along ``phase_dir``:
  ``first = position - read_dir·(n_x - 1)/2·d_x - phase_dir·(n_y - 1)/2·d_y``
  (the same as ``position - read_dir·(FOV_x/2 - d_x/2) - …``). A 3D image block of :math:`n_z` planes becomes
  :math:`n_z` slices, plane :math:`k` offset by ``slice_dir·(k - (n_z - 1)/2)·d_z``.
* DICOM rows run along ``read_dir`` (the column index grows along the readout) and columns along
  ``phase_dir``: ``ImageOrientationPatient = read_dir + phase_dir``, ``PixelSpacing = [d_y, d_x]`` (row
  spacing first). Pixel (row ``j``, column ``i``) lies at ``first + i·d_x·read_dir + j·d_y·phase_dir``.

Pixel values: the channels of an image are combined by root-sum-of-squares of their magnitudes (one channel:
its magnitude) and stored as unsigned 16-bit integers with one ``RescaleSlope`` for the whole series
(``RescaleIntercept`` 0), chosen so that the series maximum maps to 65535: real value = stored × slope, and
intensities stay comparable between slices. The classic MR Image IOD does not define the Rescale attributes;
pydicom, 3D Slicer, OsiriX/Horos and most viewers apply them, a viewer that does not still shows correct
contrast (the scale is common to the series). ``WindowCenter``/``WindowWidth`` (in real values) show 0 to the
series' 99.5th percentile, like the PNG export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.header import Header
from cloudmri_kernel.mrd.writer import AtomicOutput

#: Largest deviation from unit length / orthogonality accepted in the direction cosines of an image header.
DIRECTION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Plane:
    """One 2D slice of an MRD image series, placed in patient coordinates (LPS, mm)."""

    pixels: np.ndarray  # (rows = y, columns = x) magnitude, channels combined
    first_voxel: np.ndarray  # (3,) centre of pixel (row 0, column 0)
    row_dir: np.ndarray  # read_dir: the column index grows along it
    column_dir: np.ndarray  # phase_dir: the row index grows along it
    normal: np.ndarray  # slice_dir
    pixel_spacing: tuple[float, float]  # (between rows d_y, between columns d_x)
    thickness: float | None  # None when the header gives no slice thickness (FOV z of 0)
    image: int  # row of the MRD image header array the plane comes from

    @property
    def location(self) -> float:
        """Position along the slice normal in mm, DICOM's ``SliceLocation``."""
        return float(self.first_voxel @ self.normal)

    def world(self, row: float, column: float) -> np.ndarray:
        """LPS position in mm of the centre of pixel (row, column)."""
        dy, dx = self.pixel_spacing
        return self.first_voxel + column * dx * self.row_dir + row * dy * self.column_dir


def combined_magnitude(data: np.ndarray, n_headers: int | None = None) -> np.ndarray:
    """Image data (n, channels, z, y, x) to magnitude (n, z, y, x), channels combined by root-sum-of-squares."""
    data = np.asarray(data)
    if data.ndim != 5:
        raise InvalidDataError(f"image data must be (images, channels, z, y, x), got shape {data.shape}")
    if n_headers is not None and data.shape[0] != n_headers:
        raise InvalidDataError(f"{n_headers} image headers but {data.shape[0]} images in the data")
    if data.size == 0:
        raise InvalidDataError(f"the image series is empty (data shape {data.shape})")
    magnitude = np.abs(data).astype(np.float64, copy=False)
    combined = magnitude[:, 0] if data.shape[1] == 1 else np.sqrt(np.sum(magnitude**2, axis=1))
    if not np.isfinite(combined).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(combined))[0])
        raise InvalidDataError(f"the image data has a non-finite value at (image, z, y, x) = {where}")
    return combined


def _unit(vector: np.ndarray, name: str, image: int) -> np.ndarray:
    vector = np.asarray(vector, np.float64)
    length = float(np.linalg.norm(vector))
    if abs(length - 1) > DIRECTION_TOLERANCE:
        raise InvalidDataError(f"image {image}: {name} {vector.tolist()} is not a unit vector (length {length:.4g}): "
                               "the image headers carry no valid geometry")
    return vector / length


def series_planes(headers: np.ndarray, data: np.ndarray) -> list[Plane]:
    """The slices of an MRD image series in patient coordinates, sorted along the slice normal.

    Images at the same location (contrasts, repetitions, …) keep their stored order.

    Raises:
        InvalidDataError: data and headers disagree, or a header has no valid geometry.
    """
    headers = np.atleast_1d(np.asarray(headers))
    volume = combined_magnitude(data, len(headers))
    planes = []
    for index, (head, block) in enumerate(zip(headers, volume, strict=True)):
        nz, ny, nx = block.shape
        matrix = tuple(int(v) for v in head["matrix_size"])
        if matrix != (nx, ny, nz):
            raise InvalidDataError(f"image {index}: header matrix_size {matrix} but the data are (x, y, z) = "
                                   f"{(nx, ny, nz)}")
        fov = [float(v) for v in head["field_of_view"]]
        if fov[0] <= 0 or fov[1] <= 0 or fov[2] < 0 or (fov[2] == 0 and nz > 1):
            raise InvalidDataError(f"image {index}: field_of_view {fov} mm is not positive")
        read = _unit(head["read_dir"], "read_dir", index)
        phase = _unit(head["phase_dir"], "phase_dir", index)
        if abs(read @ phase) > DIRECTION_TOLERANCE:
            raise InvalidDataError(f"image {index}: read_dir and phase_dir are not orthogonal")
        slice_dir = np.asarray(head["slice_dir"], np.float64)
        normal = (np.cross(read, phase) if np.linalg.norm(slice_dir) == 0
                  else _unit(slice_dir, "slice_dir", index))
        if max(abs(normal @ read), abs(normal @ phase)) > DIRECTION_TOLERANCE:
            raise InvalidDataError(f"image {index}: slice_dir is not orthogonal to read_dir and phase_dir")
        dx, dy, dz = fov[0] / nx, fov[1] / ny, fov[2] / nz
        corner = (np.asarray(head["position"], np.float64)
                  - read * (nx - 1) / 2 * dx - phase * (ny - 1) / 2 * dy)
        for k in range(nz):
            planes.append(Plane(block[k], corner + normal * (k - (nz - 1) / 2) * dz, read, phase, normal,
                                (dy, dx), dz or None, index))
    return sorted(planes, key=lambda plane: plane.location)


def slice_spacing(planes: Sequence[Plane], tolerance: float = 1e-3) -> float | None:
    """Distance between consecutive slice locations when they are evenly spaced, else None.

    Rounded to 0.1 µm: MRD stores positions as float32, so further digits are noise.
    """
    locations = np.unique(np.round([p.location for p in planes], 6))
    if len(locations) < 2:
        return None
    steps = np.diff(locations)
    return round(float(steps.mean()), 4) if np.ptp(steps) <= tolerance else None


def prepare_directory(out_dir: str | Path) -> Path:
    """Create the output directory (and its parents) or say clearly why it cannot be one."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError("is a file, not a directory: give a directory for the exported files", out_dir) from None
    except OSError as exc:
        raise UsageError(f"cannot create the output directory ({exc.strerror})", out_dir) from None
    return out_dir


def write_files(paths: Sequence[Path], write: Callable[[int, Path], None]) -> list[Path]:
    """Write several files all or nothing: each under a temporary name, renamed only when all are written.

    Args:
        write: called as ``write(index, temporary_path)`` for every target path.
    """
    outputs = [AtomicOutput(path) for path in paths]
    try:
        for index, output in enumerate(outputs):
            write(index, output.temporary)
    except BaseException:
        for output in outputs:
            output.discard()
        raise
    for output in outputs:
        output.commit()
    return [output.target for output in outputs]


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def _text(value: object, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def _date(value: object) -> str:
    return "" if value is None else f"{value.year:04d}{value.month:02d}{value.day:02d}"


def _time(value: object) -> str:
    return "" if value is None else f"{value.hour:02d}{value.minute:02d}{value.second:02d}"


def _valid_uid(value: str | None) -> UID | None:
    return UID(value) if value and UID(value).is_valid else None


def _derived_uid(seed: list[str], role: str) -> UID:
    """The same UID for the same identifiers: re-exporting a study does not make a new study in a PACS."""
    return generate_uid(entropy_srcs=[f"{part}|" for part in [*seed, role]]) if seed else generate_uid()


def _first(values: Sequence[float] | None, index: int = 0) -> float | None:
    if not values:
        return None
    return float(values[index] if index < len(values) else values[0])


def _series_dataset(mrd_header: Header, series_uid: UID, study_uid: UID, frame_uid: UID,
                    series_description: str, series_number: int) -> Dataset:
    """The attributes every slice of the series shares: patient, study, series, equipment, sequence."""
    subject = mrd_header.subjectInformation
    study = mrd_header.studyInformation
    measurement = mrd_header.measurementInformation
    system = mrd_header.acquisitionSystemInformation
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.PatientName = _text(subject and subject.patientName, 64)
    ds.PatientID = _text(subject and subject.patientID, 64)
    ds.PatientBirthDate = _date(subject and subject.patientBirthdate)
    ds.PatientSex = _text(subject and subject.patientGender, 16)
    if subject and subject.patientWeight_kg:
        ds.PatientWeight = _ds(subject.patientWeight_kg)
    if subject and subject.patientHeight_m:
        ds.PatientSize = _ds(subject.patientHeight_m)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = _date(study and study.studyDate)
    ds.StudyTime = _time(study and study.studyTime)
    ds.StudyID = _text(study and study.studyID, 16)
    ds.AccessionNumber = _text(study and study.accessionNumber, 16)
    ds.ReferringPhysicianName = _text(study and study.referringPhysicianName, 64)
    ds.StudyDescription = _text(study and study.studyDescription, 64)
    if study and study.bodyPartExamined:
        ds.BodyPartExamined = _text(study.bodyPartExamined, 16)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = _text(series_description, 64)
    ds.SeriesDate = _date(measurement and measurement.seriesDate)
    ds.SeriesTime = _time(measurement and measurement.seriesTime)
    ds.ProtocolName = _text(measurement and measurement.protocolName, 64)
    position = measurement and measurement.patientPosition
    ds.PatientPosition = position.value if position is not None else ""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = _text(system and system.systemVendor, 64)
    ds.ManufacturerModelName = _text(system and system.systemModel, 64)
    ds.InstitutionName = _text(system and system.institutionName, 64)
    if system and system.systemFieldStrength_T:
        ds.MagneticFieldStrength = _ds(system.systemFieldStrength_T)
    frequency = mrd_header.experimentalConditions and mrd_header.experimentalConditions.H1resonanceFrequency_Hz
    if frequency:
        ds.ImagingFrequency = _ds(frequency / 1e6)
    encoded = mrd_header.encoding[0].encodedSpace.matrixSize if mrd_header.encoding else None
    ds.ScanningSequence = "RM"  # research mode: the raw data does not say which sequence family it is
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if encoded is not None and encoded.z > 1 else "2D"
    ds.SequenceName = _text(measurement and measurement.sequenceName, 16)
    ds.EchoTrainLength = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleType = "US"
    return ds


def export_dicom(headers: np.ndarray, data: np.ndarray, mrd_header: Header, out_dir: str | Path,
                 series_description: str | None = None, series_number: int = 1) -> list[Path]:
    """Write an MRD image series as one DICOM MR series (MR Image Storage), one file per slice.

    Patient, study and equipment fields come from the MRD header as it is (anonymize the MRD file first to
    export de-identified DICOM); absent fields stay empty. The study and frame-of-reference UIDs are the MRD
    header's when valid, otherwise derived from its identifiers (or random when it has none); the series UID
    is derived from the study UID, series number, description and pixel content, so exporting the same
    images again gives the same UIDs. Files are ``MR<series>_<instance>.dcm``, instance numbers follow the
    slice location; they appear all at once or not at all.

    Args:
        headers: MRD image headers (n,), as from ``MRDFile.read_images``.
        data: image data (n, channels, z, y, x).
        mrd_header: the MRD XML header (``MRDFile.header``).
        series_description: default the header's series description or protocol name.

    Returns:
        The written paths in instance order.

    Raises:
        InvalidDataError: headers without valid geometry, or headers and data that disagree.
        UsageError: ``out_dir`` cannot be a directory.

    Example:
        >>> with MRDFile("recon.h5") as mrd:  # doctest: +SKIP
        ...     heads, images, _ = mrd.read_images("image_0")
        ...     export_dicom(heads, images, mrd.header, "dicom/")
    """
    planes = series_planes(headers, data)
    measurement = mrd_header.measurementInformation
    study = mrd_header.studyInformation
    if series_description is None:
        series_description = ((measurement and (measurement.seriesDescription or measurement.protocolName))
                              or "Cloud-MRI reconstruction")
    seed = [value for value in (study and study.studyInstanceUID, measurement and measurement.measurementID,
                                measurement and measurement.frameOfReferenceUID,
                                measurement and measurement.seriesInstanceUIDRoot) if value]
    study_uid = _valid_uid(study and study.studyInstanceUID) or _derived_uid(seed, "study")
    frame_uid = _valid_uid(measurement and measurement.frameOfReferenceUID) or _derived_uid(seed, "frame")
    content = hashlib.sha256(np.stack([p.pixels for p in planes]).tobytes()).hexdigest()
    series_uid = _derived_uid([study_uid, str(series_number), series_description, content], "series")

    peak = max(float(p.pixels.max()) for p in planes)
    slope = float(_ds(peak / 65535)) if peak > 0 else 1.0
    window_top = float(np.percentile(np.stack([p.pixels for p in planes]), 99.5)) or peak or 1.0
    spacing = slice_spacing(planes)
    sequence = mrd_header.sequenceParameters
    common = _series_dataset(mrd_header, series_uid, study_uid, frame_uid, series_description, series_number)
    contrasts = np.atleast_1d(headers)["contrast"]
    out_dir = prepare_directory(out_dir)

    def write(index: int, path: Path) -> None:
        plane = planes[index]
        contrast = int(contrasts[plane.image])
        ds = Dataset()
        ds.update(common)
        ds.SOPInstanceUID = _derived_uid([series_uid, str(index + 1)], "instance")
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [_ds(v) for v in plane.first_voxel]
        ds.ImageOrientationPatient = [_ds(v) for v in (*plane.row_dir, *plane.column_dir)]
        ds.PixelSpacing = [_ds(v) for v in plane.pixel_spacing]
        ds.SliceThickness = _ds(plane.thickness) if plane.thickness else ""
        if spacing is not None:
            ds.SpacingBetweenSlices = _ds(spacing)
        ds.SliceLocation = _ds(plane.location)
        timing = {"RepetitionTime": _first(sequence and sequence.TR),
                  "EchoTime": _first(sequence and sequence.TE, contrast),
                  "InversionTime": _first(sequence and sequence.TI),
                  "FlipAngle": _first(sequence and sequence.flipAngle_deg)}
        for keyword, value in timing.items():
            if value is not None:
                setattr(ds, keyword, _ds(value))
            elif keyword in ("RepetitionTime", "EchoTime"):  # type 2: present even when unknown
                setattr(ds, keyword, "")
        ds.EchoNumbers = contrast + 1
        ds.Rows, ds.Columns = plane.pixels.shape
        ds.RescaleSlope = _ds(slope)
        ds.WindowCenter = _ds(window_top / 2)
        ds.WindowWidth = _ds(window_top)
        ds.PixelData = np.clip(np.rint(plane.pixels / slope), 0, 65535).astype("<u2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)

    paths = [out_dir / f"MR{series_number:03d}_{index + 1:04d}.dcm" for index in range(len(planes))]
    return write_files(paths, write)

