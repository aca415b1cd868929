"""Writing reconstructions: an MRD image file that carries its recipe, and DICOM/NIfTI/PNG exports.

Every image's MRD attribute string holds the recipe, the code version and the SHA-256 of the raw file, so any
image can be reproduced (``cloudmri recon RAW --recipe`` with the stored recipe).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cloudmri_kernel import __version__
from cloudmri_kernel.digest import file_sha256
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.images import image_headers
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.writer import MRDWriter
from cloudmri_kernel.recon.engine import ReconOutput

SERIES = "images"
EXPORT_FORMATS = ("dicom", "nifti", "png")


def provenance(output: ReconOutput, source: str | Path) -> dict:
    return {"recipe": output.recipe.model_dump(mode="json"), "software": f"cloudmri {__version__}",
            "source_sha256": file_sha256(source)}


def _headers(output: ReconOutput) -> np.ndarray:
    """One MRD image header per 2D image, in the order of ``output.images`` flattened to (n, y, x)."""
    *outer, nz, ny, nx = output.images.shape
    enc = output.header.encoding[0]
    dz = enc.reconSpace.fieldOfView_mm.z / max(nz, 1)
    acquisitions = np.repeat(output.acquisition_headers.reshape(-1), nz)
    heads = image_headers(output.header, acquisitions, len(acquisitions), (nx, ny, 1))
    heads["field_of_view"][:, 2] = dz
    if nz > 1:  # partitions of a 3D volume: offset each along the slice direction
        offsets = (np.tile(np.arange(nz), int(np.prod(outer, dtype=int))) - (nz - 1) / 2) * dz
        heads["position"] = heads["position"] + offsets[:, None] * heads["slice_dir"]
        heads["slice"] = np.tile(np.arange(nz), int(np.prod(outer, dtype=int)))
    return heads


def write_recon(output: ReconOutput, path: str | Path, source: str | Path) -> Path:
    """Write the images as an MRD image series ``images`` beside a copy of the raw header."""
    images = output.images
    flat = images.reshape(-1, 1, 1, *images.shape[-2:])
    attributes = json.dumps(provenance(output, source), sort_keys=True)
    with MRDWriter(path, output.header) as out:
        out.write_images(SERIES, _headers(output), flat, [attributes] * len(flat))
    return Path(path)


def export(images_path: str | Path, kind: str, out_dir: str | Path) -> list[Path]:
    """Export the image series of an MRD image file as DICOM, NIfTI or PNG into ``out_dir``."""
    from cloudmri_kernel.export.dicom import export_dicom
    from cloudmri_kernel.export.nifti import export_nifti
    from cloudmri_kernel.export.png import export_png

    out_dir = Path(out_dir)
    with MRDFile(images_path) as mrd:
        headers, data, _ = mrd.read_images(SERIES)
        header = mrd.header
    if kind == "dicom":
        return export_dicom(headers, data, header, out_dir, series_description="cloudmri recon")
    if kind == "nifti":
        out_dir.mkdir(parents=True, exist_ok=True)
        return [export_nifti(headers, data, header, out_dir / f"{Path(images_path).stem}.nii.gz")]
    if kind == "png":
        return export_png(headers, data, out_dir)
    raise UsageError(f"unknown export format '{kind}' (choose from {', '.join(EXPORT_FORMATS)})")
