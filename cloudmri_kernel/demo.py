"""The workbench's main job for now: simulate a phantom scan, ingest it, reconstruct it, report the result.

It exercises the whole MRD path a real scan takes (simulation -> MRD -> validation -> de-identification ->
sorted k-space -> image) and measures the error against the simulation's ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudmri_kernel.export.png import save_png
from cloudmri_kernel.mrd.images import image_headers
from cloudmri_kernel.mrd.ingest import ingest
from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.writer import MRDWriter
from cloudmri_kernel.recon.fft import reconstruct_ifft


@dataclass
class DemoResult:
    raw: Path
    ingested: Path
    images: Path
    png: Path
    nrmse: float


def run_demo(out_dir: Path, matrix: int = 256, coils: int = 8,
             step: Callable[[str], None] = lambda _message: None) -> DemoResult:
    """Simulate, ingest (de-identified), reconstruct and compare with the ground truth; write into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw, ingested = out_dir / "phantom_raw.h5", out_dir / "phantom_mrd.h5"
    images_path, png = out_dir / "phantom_recon.h5", out_dir / "phantom_recon.png"
    step("simulating a multi-coil phantom scan")
    write_phantom(raw, PhantomSpec(matrix=matrix, coils=coils, noise=0.002, seed=1))
    step("ingesting it as de-identified MRD")
    ingest(raw, ingested, anonymize=True, site="demo")
    step("reconstructing (inverse FFT, root-sum-of-squares)")
    with MRDFile(ingested) as mrd:
        header = mrd.header
        kspace = read_cartesian(mrd)
        image = reconstruct_ifft(kspace, header)[:, 0]  # (slice, y, x)
        truth = np.abs(mrd.read_array("phantom")[0])
        first_line = mrd.acquisition_headers(0, mrd.number_of_acquisitions)[-1]
    heads = image_headers(header, first_line, len(image), (image.shape[-1], image.shape[-2], 1))
    with MRDWriter(images_path, header) as out:
        out.write_images("image_0", heads, image[:, np.newaxis, np.newaxis])
    save_png(image[0], png)
    truth = truth.reshape(image.shape)
    nrmse = float(np.linalg.norm(image - truth) / np.linalg.norm(truth))
    return DemoResult(raw, ingested, images_path, png, nrmse)
