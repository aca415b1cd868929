"""Cloud-MRI notebook widgets: thin anywidget views over :mod:`cloudmri_kernel`.

Example:
    >>> import numpy as np
    >>> from cloudmri_widgets import Viewer
    >>> Viewer(np.zeros((4, 32, 32), np.complex64)).shape
    [4, 32, 32]
"""

from cloudmri_widgets.viewer import Viewer

__all__ = ["Viewer"]
