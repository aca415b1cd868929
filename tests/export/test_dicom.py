"""DICOM export: geometry, pixel values, UIDs and all-or-nothing writing, read back with pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.export import export_dicom
from tests.export.series import DX, DY, FOV, GAP, NX, NY, STUDY_UID, oblique_series


def test_series_reads_back_with_exact_geometry_and_pixels(tmp_path):
    s = oblique_series()
    paths = export_dicom(s.headers, s.data, s.header, tmp_path / "dicom", series_number=7)
    assert [p.name for p in paths] == ["MR007_0001.dcm", "MR007_0002.dcm", "MR007_0003.dcm"]
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == [p.name for p in paths]
    slices = [pydicom.dcmread(p) for p in paths]
    slope = float(slices[0].RescaleSlope)
    assert slope == pytest.approx(s.magnitude.max() / 65535, rel=1e-9)
    for k, ds in enumerate(slices):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
        assert ds.InstanceNumber == k + 1 and ds.SeriesNumber == 7
        assert (ds.Rows, ds.Columns) == (NY, NX)
        assert float(ds.RescaleSlope) == slope and float(ds.RescaleIntercept) == 0
        np.testing.assert_array_equal(ds.pixel_array, np.rint(s.magnitude[k] / slope).astype(np.uint16))
        assert np.abs(ds.pixel_array * slope - s.magnitude[k]).max() <= slope / 2 + 1e-12
        # MRD position is the image centre; DICOM wants the centre of the first voxel.
        first = s.centres[k] - s.read * (FOV[0] / 2 - DX / 2) - s.phase * (FOV[1] / 2 - DY / 2)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], first, atol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [*s.read, *s.phase], atol=1e-9)
        assert [float(v) for v in ds.PixelSpacing] == [DY, DX]
        assert float(ds.SliceThickness) == FOV[2] and float(ds.SpacingBetweenSlices) == pytest.approx(GAP)
        assert float(ds.SliceLocation) == pytest.approx(s.centres[k] @ s.normal, abs=1e-4)
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == 3
    assert {ds.StudyInstanceUID for ds in slices} == {STUDY_UID}
    assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
    assert np.diff([float(ds.SliceLocation) for ds in slices]).tolist() == pytest.approx([GAP, GAP])


def test_header_fields_are_copied(tmp_path):
    s = oblique_series()
    ds = pydicom.dcmread(export_dicom(s.headers, s.data, s.header, tmp_path, series_description="SENSE R=2")[0])
    assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "P-123" and ds.PatientSex == "F"
    assert ds.StudyDate == "20240305" and ds.StudyTime == "140709" and ds.StudyID == "S1"
    assert ds.SeriesDescription == "SENSE R=2" and ds.ProtocolName == "t1_oblique"
    assert ds.Manufacturer == "ACME" and ds.ManufacturerModelName == "Imager"
    assert float(ds.MagneticFieldStrength) == pytest.approx(2.89)
    assert (float(ds.RepetitionTime), float(ds.EchoTime), float(ds.FlipAngle)) == (500.0, 12.0, 70.0)
    assert ds.PatientPosition == "HFS" and ds.MRAcquisitionType == "2D"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_absent_patient_fields_stay_empty_and_uids_are_reproducible(tmp_path):
    s = oblique_series(with_subject=False)
    first = [pydicom.dcmread(p) for p in export_dicom(s.headers, s.data, s.header, tmp_path / "a")]
    again = [pydicom.dcmread(p) for p in export_dicom(s.headers, s.data, s.header, tmp_path / "b")]
    assert str(first[0].PatientName) == "" and first[0].PatientID == "" and first[0].PatientBirthDate == ""
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    other = export_dicom(s.headers, 2 * s.data, s.header, tmp_path / "c")  # another reconstruction
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != first[0].SeriesInstanceUID
    assert pydicom.dcmread(other[0]).StudyInstanceUID == first[0].StudyInstanceUID


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    s = oblique_series()
    blocker = tmp_path / "out"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        export_dicom(s.headers, s.data, s.header, blocker)
    with pytest.raises(UsageError, match="cannot create the output directory"):
        export_dicom(s.headers, s.data, s.header, blocker / "series")
    assert blocker.read_text() == "not a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failure_half_way_leaves_no_files(tmp_path, monkeypatch):
    s = oblique_series()
    original, calls = Dataset.save_as, []

    def failing_save(self, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", failing_save)
    with pytest.raises(OSError, match="No space left"):
        export_dicom(s.headers, s.data, s.header, tmp_path)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_headers_without_geometry_are_rejected(tmp_path):
    s = oblique_series()
    s.headers["read_dir"][1] = 0
    with pytest.raises(InvalidDataError, match="image 1: read_dir .* is not a unit vector"):
        export_dicom(s.headers, s.data, s.header, tmp_path / "x")
    with pytest.raises(InvalidDataError, match="3 image headers but 2 images"):
        export_dicom(oblique_series().headers, s.data[:2], s.header, tmp_path / "x")
    assert not (tmp_path / "x").exists()
