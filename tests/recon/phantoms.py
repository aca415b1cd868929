"""Single-slice phantom files as the inputs of the reconstruction functions, with their ground truth."""

from __future__ import annotations

import numpy as np

from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.reader import MRDFile, has_flag
from cloudmri_kernel.recon.operators import remove_readout_oversampling


def cartesian_slice(path):
    """(kspace (coils, ky, kx) with calibration lines merged and readout oversampling removed, mask (ky,),
    phantom, csm) of a single-slice Cartesian phantom file."""
    with MRDFile(path) as mrd:
        sorted_kspace = read_cartesian(mrd)
        recon_x = int(mrd.header.encoding[0].reconSpace.matrixSize.x)
        phantom, csm = mrd.read_array("phantom")[0, 0], mrd.read_array("csm")[0, 0]
    kspace, mask = sorted_kspace.kspace[0, :, 0], sorted_kspace.mask[0, 0]
    if sorted_kspace.calibration is not None:
        calibration = sorted_kspace.calibration[0, :, 0]
        extra = (calibration != 0).any(axis=(0, 2)) & ~mask
        kspace = np.where(extra[None, :, None], calibration, kspace)
        mask = mask | extra
    return remove_readout_oversampling(kspace, recon_x), mask, phantom, csm


def non_cartesian_slice(path):
    """(samples (coils, points), traj (points, 2), phantom, csm) of a single-slice radial or spiral file."""
    with MRDFile(path) as mrd:
        block = mrd.read_acquisitions()
        phantom, csm = mrd.read_array("phantom")[0, 0], mrd.read_array("csm")[0, 0]
    imaging = ~has_flag(block.headers["flags"], "IS_NOISE_MEASUREMENT")
    samples = np.concatenate([d for d, keep in zip(block.data, imaging, strict=True) if keep], axis=1)
    traj = np.concatenate([t for t, keep in zip(block.traj, imaging, strict=True) if keep])
    return samples, traj, phantom, csm
