"""Importers: each reads one outside format into :class:`RawContent`, which ``cloudmri ingest`` writes as MRD.

An importer never writes files itself; writing (atomic, C++-readable) and de-identification happen once,
in :mod:`cloudmri_kernel.mrd.ingest`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from cloudmri_kernel.mrd.header import Header
from cloudmri_kernel.mrd.reader import AcquisitionBlock


@dataclass
class RawContent:
    """MRD content held in memory or produced lazily: a header, blocks of acquisitions, extra NDArrays."""

    header: Header
    blocks: Iterable[AcquisitionBlock]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    source_format: str = "mrd"
