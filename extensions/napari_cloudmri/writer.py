"""napari writer: a labels layer saved to the catalog as the caller's label set on a series.

``layer.save("lesions.json", plugin="cloudmri-workbench")`` (or File > Save Selected Layers, choosing "Cloud-MRI
catalog labels") stores the layer as label set ``lesions`` of the caller on the layer's series, through
:meth:`cloudmri_kernel.client.Client.save_labels` with the caller's own token (``CLOUDMRI_SERVICE_TOKEN``,
``…_TOKEN_FILE``, ``JUPYTERHUB_API_TOKEN`` or the saved one) and ``CLOUDMRI_SERVICE_URL``. The ROIs are the
run-length encoded masks of :mod:`napari_cloudmri.labels`. The file named in the save is the catalog's record
of the saved set (JSON), written only after the service accepted it.

The series is the ``series_id`` in the layer's metadata (the reader sets it for files downloaded from the
service) or the layer name ``series:ID``. Names of the label values are the metadata's ``vocabulary``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cloudmri_kernel.client import Client
from cloudmri_kernel.errors import UsageError
from napari_cloudmri.labels import mask_to_rois, vocabulary_for

#: Label set names the service accepts (``PUT /series/{id}/labels/{name}``).
LABEL_SET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SERIES_NAME = re.compile(r"series:([0-9A-Za-z_-]+)")


def series_of(meta: dict) -> str:
    """The series a labels layer belongs to, from its metadata or its name ``series:ID``."""
    series_id = (meta.get("metadata") or {}).get("series_id")
    if series_id:
        return str(series_id)
    match = _SERIES_NAME.search(meta.get("name") or "")
    if match:
        return match.group(1)
    raise UsageError(f"the labels layer {meta.get('name')!r} is not tied to a series: open the series file "
                     "downloaded from the service (it is named <series id>.h5), or rename the layer "
                     "'series:<series id>'")


def _check_shape(mask: np.ndarray, series: dict) -> None:
    shape = [int(n) for n in series["shape"]]  # the reconstruction's (..., y, x)
    images, plane = int(np.prod(shape[:-2], dtype=int)), shape[-2:]
    layer_images = int(np.prod(mask.shape[:-2], dtype=int))
    if (layer_images, list(mask.shape[-2:])) != (images, plane):
        raise UsageError(f"the labels layer holds {layer_images} images of {list(mask.shape[-2:])} but series "
                         f"{series['id']} has {images} images of {plane}: draw on a labels layer of the series' "
                         "shape (its image layer's)")


def write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: save the labels layer ``data`` as label set ``Path(path).stem``.

    Returns:
        ``[path]``, the JSON record of the saved set (id, reader, name, ROIs, time).

    Raises:
        UsageError: no series for the layer, no token, a label set name the service refuses, or a layer whose
            shape is not the series'.
        ServiceError: the service refused the labels (an expired token, a series the caller cannot see).
    """
    target = Path(path)
    name = target.name.removesuffix(".json")
    if not LABEL_SET_NAME.match(name):
        raise UsageError(f"the label set name {name!r} (the file name without .json) may hold only letters, digits, "
                         "'.', '_' and '-' (at most 128)", target)
    series_id = series_of(meta)
    mask = np.asarray(data)
    vocabulary = vocabulary_for(mask, (meta.get("metadata") or {}).get("vocabulary") or ())
    rois = mask_to_rois(mask, vocabulary)
    with Client() as client:
        _check_shape(mask, client.series(series_id))
        saved = client.save_labels(series_id, name, rois, vocabulary)
    target.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    return [str(target)]
