"""Cloud-MRI notebook widgets: thin anywidget views over :mod:`cloudmri_kernel`.

Example:
    >>> import numpy as np
    >>> from cloudmri_widgets import Viewer
    >>> Viewer(np.zeros((4, 32, 32), np.complex64)).shape
    [4, 32, 32]
"""

from cloudmri_widgets.federated import FederatedExperiment
from cloudmri_widgets.labeler import Labeler
from cloudmri_widgets.ledger import LedgerBrowser
from cloudmri_widgets.reader_study import ReaderStudyApp, StudyReader, StudyResults, StudySetup
from cloudmri_widgets.reading import ReadingRoom
from cloudmri_widgets.reconstruct import Reconstruct
from cloudmri_widgets.upload import Upload
from cloudmri_widgets.viewer import Viewer

__all__ = ["FederatedExperiment", "Labeler", "LedgerBrowser", "ReaderStudyApp", "ReadingRoom", "Reconstruct",
           "StudyReader", "StudyResults", "StudySetup", "Upload", "Viewer"]
