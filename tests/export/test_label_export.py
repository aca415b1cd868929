"""Label maps exported beside their series: NIfTI on the image's grid, DICOM SEG referencing the MR instances."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.export import export_dicom, export_nifti
from cloudmri_kernel.export.labels import NIFTI_INTENT_LABEL, labels_to_dicom_seg, labels_to_nifti
from tests.export.series import NX, NY, oblique_series

VOCABULARY = {"lesion": "#e6194b", "oedema": "#3cb44b", "liver": "#4363d8"}


def _label_map() -> np.ndarray:
    """(3, NY, NX): a lesion on slice 0, liver (the third name) on slices 1 and 2, no oedema anywhere."""
    masks = np.zeros((3, NY, NX), np.uint8)
    masks[0, 2:5, 3:9] = 1
    masks[1, 6:, :4] = 3
    masks[2, 0, 0] = 3
    return masks


def test_nifti_labels_share_the_images_affine_voxel_for_voxel(tmp_path):
    s = oblique_series()
    image = nib.load(export_nifti(s.headers, s.data, s.header, tmp_path / "series.nii.gz"))
    masks = _label_map()
    for reference in (tmp_path / "series.nii.gz", image, image.affine):
        labels = nib.load(labels_to_nifti(masks, reference, tmp_path / "labels.nii.gz"))
        np.testing.assert_array_equal(labels.affine, image.affine)
        np.testing.assert_allclose(labels.get_qform(), image.get_qform(), atol=1e-5)  # quaternion round-off
        assert labels.shape == image.shape and labels.get_data_dtype() == np.uint8
        assert int(labels.header["intent_code"]) == NIFTI_INTENT_LABEL and int(labels.header["sform_code"]) == 1
        volume = np.asarray(labels.dataobj)
        assert volume[3, 2, 0] == 1 and volume[0, NY - 1, 1] == 3  # (x, y, slice) = (column, row, slice)
        np.testing.assert_array_equal(volume.transpose(2, 1, 0), masks)

    with pytest.raises(InvalidDataError, match=r"does not fit the image.*\(16, 12, 3\)"):
        labels_to_nifti(masks[:2], image, tmp_path / "bad.nii")
    with pytest.raises(UsageError, match="4×4"):
        labels_to_nifti(masks, np.eye(3), tmp_path / "bad.nii")
    with pytest.raises(UsageError, match=".nii"):
        labels_to_nifti(masks, image, tmp_path / "labels.nrrd")
    with pytest.raises(InvalidDataError, match="0…255"):
        labels_to_nifti(masks.astype(np.int16) - 1, image, tmp_path / "bad.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz", "series.nii.gz"]


def test_dicom_seg_references_the_exported_instances_and_reads_back_the_same_map(tmp_path):
    s = oblique_series()
    instances = [pydicom.dcmread(p) for p in export_dicom(s.headers, s.data, s.header, tmp_path / "dicom")]
    masks = _label_map()
    path = labels_to_dicom_seg(masks, VOCABULARY, tmp_path / "dicom", tmp_path / "labels.seg.dcm")

    raw = pydicom.dcmread(path)
    assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.Modality == "SEG"  # Segmentation Storage
    assert raw.StudyInstanceUID == instances[0].StudyInstanceUID and raw.PatientID == "P-123"
    assert raw.FrameOfReferenceUID == instances[0].FrameOfReferenceUID
    referenced = {item.ReferencedSOPInstanceUID for series in raw.ReferencedSeriesSequence
                  for item in series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in instances}
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == instances[0].SeriesInstanceUID

    seg = hd.seg.segread(path)
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == ["lesion", "liver"]
    lesion_colour = seg.get_segment_description(1).RecommendedDisplayCIELabValue
    assert list(lesion_colour) == list(hd.color.CIELabColor.from_string("#e6194b").value)
    uids = [ds.SOPInstanceUID for ds in instances]  # instance order = slice order along the normal
    read = seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                             assert_missing_frames_are_empty=True)
    assert read.shape == (3, NY, NX)
    segment_value = np.array([0, 1, 3])  # SEG segment number to the label map's value (oedema is absent)
    np.testing.assert_array_equal(segment_value[read], masks)
    # Each frame sits where its MR image does.
    for group in raw.PerFrameFunctionalGroupsSequence:
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = group.PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in position] == pytest.approx(
            [float(v) for v in next(ds for ds in instances if ds.SOPInstanceUID == source).ImagePositionPatient])

    again = labels_to_dicom_seg(masks, VOCABULARY, tmp_path / "dicom", tmp_path / "again.dcm")
    assert pydicom.dcmread(again).SOPInstanceUID == raw.SOPInstanceUID  # the same labels, the same object


def test_dicom_seg_refuses_maps_that_do_not_fit(tmp_path):
    s = oblique_series()
    export_dicom(s.headers, s.data, s.header, tmp_path / "dicom")
    masks = _label_map()
    with pytest.raises(InvalidDataError, match=r"\(instances, rows, columns\) = \(3, 12, 16\)"):
        labels_to_dicom_seg(masks[:, :, :8], VOCABULARY, tmp_path / "dicom", tmp_path / "x.dcm")
    with pytest.raises(InvalidDataError, match="only 2 name"):
        labels_to_dicom_seg(masks, ["lesion", "oedema"], tmp_path / "dicom", tmp_path / "x.dcm")
    with pytest.raises(InvalidDataError, match="empty"):
        labels_to_dicom_seg(np.zeros_like(masks), VOCABULARY, tmp_path / "dicom", tmp_path / "x.dcm")
    with pytest.raises(UsageError, match="no .dcm files"):
        labels_to_dicom_seg(masks, VOCABULARY, tmp_path, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()
