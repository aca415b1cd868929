"""Interoperability with BART (Berkeley Advanced Reconstruction Toolbox): its ``.cfl``/``.hdr`` array files and
running its command line, as a reference in tests and benchmarks and for users who continue in BART.

A ``.cfl`` file holds complex64 values in Fortran (column-major) order; the ``.hdr`` beside it lists the
dimensions. BART's axis order is (readout x, phase y, partition z, coil, map, ...).

References:
    Uecker M et al. Berkeley Advanced Reconstruction Toolbox. Proc. ISMRM 2015;23:2486.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from cloudmri_kernel.errors import UsageError


def write_cfl(base: str | Path, values: np.ndarray) -> None:
    """Write ``values`` (any shape, BART axis order) as ``base.cfl`` + ``base.hdr``."""
    base = Path(base)
    array = np.asarray(values, dtype=np.complex64)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(n) for n in array.shape) + "\n")
    array.ravel(order="F").tofile(base.with_suffix(".cfl"))


def read_cfl(base: str | Path) -> np.ndarray:
    """Read ``base.cfl`` with the shape from ``base.hdr`` (trailing singleton axes dropped)."""
    base = Path(base)
    lines = base.with_suffix(".hdr").read_text().splitlines()
    shape = [int(n) for n in lines[1].split()]
    while len(shape) > 1 and shape[-1] == 1:
        shape.pop()
    data = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    return data.reshape(shape, order="F")


def to_bart_kspace(kspace: np.ndarray) -> np.ndarray:
    """(coils, ny, nx) -> BART (nx, ny, 1, coils)."""
    return np.transpose(kspace, (2, 1, 0))[:, :, np.newaxis, :]


def from_bart_image(image: np.ndarray) -> np.ndarray:
    """BART (nx, ny[, 1, coils...]) -> (..., ny, nx), the leading axis dropped when it has length one."""
    stacked = np.transpose(image.reshape(image.shape[0], image.shape[1], -1), (2, 1, 0))
    return stacked[0] if stacked.shape[0] == 1 else stacked


def run_bart(*args: str | Path, threads: int | None = None) -> str:
    """Run ``bart ARGS`` and return its output; raises UsageError when BART is missing or fails."""
    executable = shutil.which("bart")
    if executable is None:
        raise UsageError("BART is not installed (apt-get install bart; ./workbench setup does)")
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run([executable, *map(str, args)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise UsageError(f"bart {' '.join(map(str, args[:1]))} failed: {result.stderr.strip() or result.stdout}")
    return result.stdout
