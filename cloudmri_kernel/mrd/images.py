"""MRD image headers filled from the raw header and the acquisitions, so images keep their geometry."""

from __future__ import annotations

import ismrmrd.constants as constants
import numpy as np
from ismrmrd.hdf5 import image_header_dtype

from cloudmri_kernel.mrd.header import Header


def image_headers(header: Header, acquisition: np.ndarray, count: int, matrix: tuple[int, int, int],
                  series_index: int = 1) -> np.ndarray:
    """``count`` magnitude image headers with matrix, FOV, position and orientation of the raw data.

    Args:
        acquisition: one acquisition header per image (or one for all) giving position and directions.
    """
    recon = header.encoding[0].reconSpace
    heads = np.zeros(count, image_header_dtype)
    acquisition = np.broadcast_to(acquisition, (count,))
    heads["version"] = 1
    heads["data_type"] = constants.DATATYPE_FLOAT
    heads["image_type"] = constants.IMTYPE_MAGNITUDE
    heads["matrix_size"] = matrix
    heads["field_of_view"] = (recon.fieldOfView_mm.x, recon.fieldOfView_mm.y, recon.fieldOfView_mm.z)
    heads["channels"] = 1
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position",
                 "measurement_uid", "acquisition_time_stamp", "physiology_time_stamp"):
        heads[name] = acquisition[name]
    for name in ("slice", "contrast", "phase", "repetition", "set", "average"):
        heads[name] = acquisition["idx"][name]
    heads["image_index"] = np.arange(1, count + 1)
    heads["image_series_index"] = series_index
    return heads
