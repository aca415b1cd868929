"""NIfTI export: the affine agrees with the DICOM geometry voxel for voxel (LPS to RAS)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.export import export_dicom, export_nifti
from tests.export.series import DX, DY, FOV, GAP, NX, NY, oblique_series


def test_volume_and_affine_match_the_dicom_series(tmp_path):
    s = oblique_series()
    path = export_nifti(s.headers, s.data, s.header, tmp_path / "series.nii")
    image = nib.load(path)
    assert image.shape == (NX, NY, 3)
    np.testing.assert_allclose(image.get_fdata(), s.magnitude.transpose(2, 1, 0), rtol=1e-6)
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
    np.testing.assert_allclose(image.header.get_zooms(), (DX, DY, GAP), rtol=1e-6)
    np.testing.assert_allclose(image.get_qform(), image.affine, atol=1e-4)

    slices = [pydicom.dcmread(p) for p in export_dicom(s.headers, s.data, s.header, tmp_path / "dicom")]
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    for i, j, k in [(0, 0, 0), (NX - 1, 0, 0), (0, NY - 1, 1), (5, 7, 2), (NX - 1, NY - 1, 2)]:
        ds = slices[k]
        row_dir = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
        column_dir = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
        row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
        # DICOM pixel (row j, column i) of slice k, PS3.3 C.7.6.2.1.1
        lps = np.array([float(v) for v in ds.ImagePositionPatient]) + i * column_spacing * row_dir \
            + j * row_spacing * column_dir
        np.testing.assert_allclose(image.affine @ [i, j, k, 1], [*(lps * lps_to_ras), 1], atol=1e-4)
        assert image.get_fdata()[i, j, k] == pytest.approx(ds.pixel_array[j, i] * float(ds.RescaleSlope),
                                                           abs=float(ds.RescaleSlope))
    # The centre of the middle slice is the MRD position of that image.
    centre = image.affine @ [(NX - 1) / 2, (NY - 1) / 2, 1, 1]
    np.testing.assert_allclose(centre[:3], s.centres[1] * lps_to_ras, atol=1e-4)


def test_gzip_and_single_slice(tmp_path):
    s = oblique_series(stored_order=(1,))
    image = nib.load(export_nifti(s.headers, s.data, s.header, tmp_path / "one.nii.gz"))
    assert image.shape == (NX, NY, 1)
    np.testing.assert_allclose(image.header.get_zooms(), (DX, DY, FOV[2]), rtol=1e-6)
    assert (tmp_path / "one.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert [p.name for p in tmp_path.iterdir()] == ["one.nii.gz"]


def test_irregular_slices_and_bad_paths_are_refused(tmp_path):
    s = oblique_series()
    s.headers["position"][0] += s.normal * 1.0  # one slice moved by 1 mm: no longer a regular grid
    with pytest.raises(InvalidDataError, match="not evenly spaced"):
        export_nifti(s.headers, s.data, s.header, tmp_path / "bad.nii")
    with pytest.raises(UsageError, match=r"ends in \.nii"):
        export_nifti(s.headers, s.data, s.header, tmp_path / "bad.img")
    with pytest.raises(UsageError, match="directory does not exist"):
        export_nifti(oblique_series().headers, s.data, s.header, tmp_path / "missing" / "x.nii")
    assert list(tmp_path.iterdir()) == []
