"""A small synthetic oblique MRD image series with known geometry, shared by the export tests."""

from __future__ import annotations

from dataclasses import dataclass

import ismrmrd.xsd as xsd
import numpy as np
from ismrmrd.hdf5 import image_header_dtype
from xsdata.models.datatype import XmlDate, XmlTime

from cloudmri_kernel.mrd.build import Geometry, make_header

NX, NY = 16, 12  # columns (read), rows (phase): different so that a swap shows
FOV = (240.0, 192.0, 5.0)  # dx = 15 mm, dy = 16 mm, slice thickness 5 mm
DX, DY = FOV[0] / NX, FOV[1] / NY
GAP = 6.0  # slice spacing, wider than the thickness
CENTRE = np.array([10.0, -20.0, 30.0])
STUDY_UID = "1.2.826.0.1.3680043.8.498.1234567890"


def rotation(a: float = 0.3, b: float = -0.5, c: float = 0.7) -> np.ndarray:
    """A proper rotation whose columns are read, phase and slice direction."""
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Series:
    headers: np.ndarray
    data: np.ndarray  # (3, 2, 1, NY, NX) complex
    magnitude: np.ndarray  # (3, NY, NX) root-sum-of-squares, in slice order along slice_dir
    header: xsd.ismrmrdHeader
    read: np.ndarray
    phase: np.ndarray
    normal: np.ndarray
    centres: np.ndarray  # (3, 3) LPS image centres in slice order


def oblique_series(stored_order: tuple[int, ...] = (2, 0, 1), with_subject: bool = True) -> Series:
    """Three 2-channel slices along an oblique slice direction, stored out of order."""
    frame = rotation()
    read, phase, normal = frame[:, 0], frame[:, 1], frame[:, 2]
    centres = np.array([CENTRE + normal * GAP * k for k in range(3)])
    rng = np.random.default_rng(0)
    data = (rng.random((3, 2, 1, NY, NX)) + 1j * rng.random((3, 2, 1, NY, NX))).astype(np.complex64)
    magnitude = np.sqrt((np.abs(data.astype(np.complex128)) ** 2).sum(axis=1))[:, 0]
    heads = np.zeros(3, image_header_dtype)
    heads["version"] = 1
    heads["matrix_size"] = (NX, NY, 1)
    heads["field_of_view"] = FOV
    heads["channels"] = 2
    heads["read_dir"] = read
    heads["phase_dir"] = phase
    heads["slice_dir"] = normal
    heads["position"] = centres
    heads["slice"] = np.arange(3)
    order = list(stored_order)
    header = make_header(Geometry((NX, NY, 1), (NX, NY, 1), FOV, FOV, coils=2, slices=3, field_strength_t=2.89,
                                  vendor="ACME", model="Imager", protocol="t1_oblique", tr_ms=500.0, te_ms=12.0,
                                  flip_angle_deg=70.0))
    header.studyInformation = xsd.studyInformationType(studyInstanceUID=STUDY_UID, studyDate=XmlDate(2024, 3, 5),
                                                       studyTime=XmlTime(14, 7, 9), studyID="S1")
    if with_subject:
        header.subjectInformation = xsd.subjectInformationType(patientName="Doe^Jane", patientID="P-123",
                                                               patientGender="F")
    return Series(heads[order], data[order], magnitude, header, read, phase, normal, centres)
