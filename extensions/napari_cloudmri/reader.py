"""napari reader of MRD files: raw k-space opens as its reconstruction, an image series as it was stored.

A raw file (one with acquisitions) is checked with :func:`cloudmri_kernel.mrd.validate.validate_file` and
reconstructed by :func:`cloudmri_kernel.recon.engine.reconstruct_file` with the recipe its header calls for
(:func:`~cloudmri_kernel.recon.recipe.default_recipe`). An image file is what ``cloudmri recon`` writes and the
service stores: the MRD image series ``images`` (:mod:`cloudmri_kernel.recon.output`), placed by
:func:`cloudmri_kernel.export.dicom.series_planes` and kept in its stored order, so that a layer's image index is
the series' image index. Layers carry their pixel spacing in mm as napari ``scale``.

The service names a downloaded series file ``<series id>.h5`` (``cloudmri`` client ``download_series``). Such a
file opens with the series ID in the image layer's metadata and an empty labels layer tied to the same series,
which :func:`napari_cloudmri.writer.write_labels` saves back to the catalog.

Files that the library cannot open as MRD (other HDF5 files, text, directories) are declined: the reader
getter returns None and napari tries other readers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from cloudmri_kernel.errors import CloudMRIError, InvalidDataError
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.recon.output import SERIES

#: Stem of a series file downloaded from the service: the series ID, a UUID in hex.
SERIES_FILE = re.compile(r"^[0-9a-f]{32}$")


def mrd_kind(path: str | Path) -> str | None:
    """``raw`` for an MRD file with acquisitions, ``images`` for an MRD image file, None for anything else."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return None
    try:
        with MRDFile(path) as mrd:
            if mrd.number_of_acquisitions:
                return "raw"
            return "images" if SERIES in mrd.array_names else None
    except CloudMRIError:
        return None


def get_reader(path: str | list[str]):
    """npe2 reader command: the function that reads ``path``, or None when it is not an MRD file."""
    if not isinstance(path, str | Path):
        return None
    return {"raw": read_raw, "images": read_images}.get(mrd_kind(path))


def _slice_spacing(output, axis: int) -> float:
    """Distance in mm between neighbouring slices along ``axis`` of a reconstruction, 1 when not regular."""
    heads = np.moveaxis(output.acquisition_headers, axis, 0)
    heads = heads.reshape(len(heads), -1)[:, 0]
    locations = np.einsum("ij,ij->i", heads["position"].astype(np.float64), heads["slice_dir"].astype(np.float64))
    steps = np.abs(np.diff(locations))
    return round(float(steps.mean()), 4) if steps.size and steps.min() > 0 and np.ptp(steps) <= 1e-3 else 1.0


def read_raw(path: str | Path) -> list[tuple]:
    """Reconstruct a raw file with its default recipe: one image layer, axes of length one left out."""
    from cloudmri_kernel.mrd.validate import validate_file
    from cloudmri_kernel.recon.engine import reconstruct_file

    path = Path(path)
    errors = [f"{f.where}: {f.message}" for f in validate_file(path) if f.severity == "error"]
    if errors:
        raise InvalidDataError(f"is not valid MRD raw data ({'; '.join(errors)}); `cloudmri validate` lists "
                               "every finding", path)
    output = reconstruct_file(path)
    images = output.images
    keep = [axis for axis, size in enumerate(images.shape) if size > 1 or axis >= images.ndim - 2]
    dims = [output.dims[axis] for axis in keep]
    recon = output.header.encoding[0].reconSpace
    nz, ny, nx = images.shape[-3:]  # the engine's dims always end with z, y, x
    spacing = {"x": recon.fieldOfView_mm.x / nx, "y": recon.fieldOfView_mm.y / ny,
               "z": recon.fieldOfView_mm.z / nz}
    scale = [spacing[d] if d in spacing else _slice_spacing(output, axis) if d == "slice" else 1.0
             for d, axis in zip(dims, keep, strict=True)]
    metadata = {"source": str(path), "recipe": output.recipe.model_dump(mode="json"), "dims": dims,
                "warnings": output.warnings}
    data = images.reshape([images.shape[axis] for axis in keep])
    return [(data, {"name": f"{path.stem} ({output.recipe.method})", "scale": scale, "axis_labels": dims,
                    "metadata": metadata}, "image")]


def read_images(path: str | Path) -> list[tuple]:
    """An MRD image file as an image layer (images, y, x); from the service, with a labels layer for it."""
    from cloudmri_kernel.export.dicom import series_planes, slice_spacing

    path = Path(path)
    with MRDFile(path) as mrd:
        headers, data, attributes = mrd.read_images(SERIES)
    planes = sorted(series_planes(headers, data), key=lambda plane: plane.image)
    volume = np.stack([plane.pixels for plane in planes]).astype(np.float32)
    dy, dx = planes[0].pixel_spacing
    distinct = len({round(plane.location, 4) for plane in planes}) == len(planes)
    depth = (slice_spacing(planes) if distinct else None) or planes[0].thickness or 1.0
    scale, dims = [depth, dy, dx], ["image", "y", "x"]
    if len(planes) == 1:
        volume, scale, dims = volume[0], scale[1:], dims[1:]
    metadata = {"source": str(path)}
    try:
        metadata["provenance"] = json.loads(attributes[0])
    except (IndexError, ValueError):
        pass  # images written elsewhere need not carry the recipe
    series_id = path.stem if SERIES_FILE.match(path.stem) else None
    name = path.stem
    if series_id:
        metadata["series_id"] = series_id
        name = f"series:{series_id}"
    layers = [(volume, {"name": name, "scale": scale, "axis_labels": dims, "metadata": metadata}, "image")]
    if series_id:
        layers.append((np.zeros(volume.shape, np.int32), {"name": f"{name} labels", "scale": scale,
                                                          "axis_labels": dims,
                                                          "metadata": {"series_id": series_id}}, "labels"))
    return layers
