"""napari plugin of the Cloud-MRI Workbench (npe2 manifest ``napari.yaml``).

- Reader (:mod:`napari_cloudmri.reader`): an MRD raw file opens as its reconstruction with the default recipe
  for its header, an MRD image file (what ``cloudmri recon`` writes and the service stores) as its images;
  anything else is declined so that other readers can try.
- Writer (:mod:`napari_cloudmri.writer`): a labels layer is saved to the catalog as the caller's label set on a
  series, through :class:`cloudmri_kernel.client.Client`, in the ROI encoding of :mod:`napari_cloudmri.labels`.

The plugin never imports napari itself: readers return layer data tuples and the writer receives arrays, as
npe2 specifies, so it is loaded lazily and its functions can be called without a viewer.
"""

from napari_cloudmri.labels import mask_to_rois, rois_to_mask
from napari_cloudmri.reader import get_reader
from napari_cloudmri.writer import write_labels

__all__ = ["get_reader", "mask_to_rois", "rois_to_mask", "write_labels"]
