"""Exports of reconstructed MRD image series for viewers and other tools: DICOM, NIfTI and PNG.

Example:
    >>> from cloudmri_kernel.export import export_dicom, export_nifti
    >>> with MRDFile("recon.h5") as mrd:  # doctest: +SKIP
    ...     heads, images, _ = mrd.read_images("image_0")
    ...     export_dicom(heads, images, mrd.header, "dicom/")
    ...     export_nifti(heads, images, mrd.header, "recon.nii.gz")
"""

from cloudmri_kernel.export.dicom import export_dicom, series_planes
from cloudmri_kernel.export.nifti import export_nifti, nifti_affine
from cloudmri_kernel.export.png import export_png, save_png

__all__ = ["export_dicom", "export_nifti", "export_png", "nifti_affine", "save_png", "series_planes"]
