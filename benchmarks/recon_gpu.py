"""Reconstruction on a CUDA GPU: ours on the GPU against ours on the CPU and SigPy on the GPU (CuPy), same inputs.

Run on a machine with an NVIDIA GPU (the project's CI has none; the tables in ``docs/benchmarks/recon_gpu.md``
come from the device machine lent to a development session):

    python benchmarks/recon_gpu.py --repeats 3 --markdown recon_gpu.md

What is measured, per case (simulated phantoms as in ``recon_vs_peers.py``: Shepp-Logan, birdcage coils, 1 %
noise, 24 calibration lines, Poisson-disc R=4; the same ESPIRiT maps for every method):

* SENSE (CG, λ=0, 30 iterations), L1-wavelet (FISTA, λ=0.005, 100 iterations) and TV (primal-dual, λ=0.005,
  100 iterations), the workbench recipes' defaults, no early stopping — ours on the CPU (every core of the
  machine), ours on the GPU, SigPy's ``SenseRecon``/``L1WaveletRecon``/``TotalVariationRecon`` on the GPU;
* the GPU image against the CPU image (NRMSE: the same numbers, computed elsewhere) and every image against the
  truth (NRMSE, SSIM, scored exactly as in ``recon_vs_peers.py``);
* ESPIRiT maps (ours CPU, ours GPU, SigPy ``EspiritCalib`` on the GPU);
* non-Cartesian iterative SENSE on a golden-angle radial phantom (ours CPU vs GPU);
* GRAPPA on the real dataset in ../shared/data (ours CPU vs GPU, ghost-energy fraction of each).

Times are medians of ``--repeats`` calls, each ending with the image in host memory (a NumPy array), so that GPU
work is finished inside the timed call; one untimed 2-iteration call per method and case warms up kernels and
caches first.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from recon_vs_peers import (
    CALIBRATION_LINES,
    GRAPPA_FILE,
    METHODS,
    WARM_UP_ITERATIONS,
    Case,
    cpu_model,
    method_settings,
    ours,
    read_slice,
    score,
    simulate,
    timed,
)

CASES = [Case(256, 16, 4, "poisson"), Case(512, 32, 4, "poisson")]
QUICK_CASES = [Case(128, 8, 4, "poisson")]
RADIAL_MATRIX, RADIAL_COILS = 256, 16


def sigpy_gpu(method: str, kspace, maps, lamda: float, iterations: int):
    """SigPy's app on GPU 0; the image copied back to the host."""
    import sigpy
    from sigpy.mri import app

    apps = {"sense": app.SenseRecon, "l1-wavelet": app.L1WaveletRecon, "tv": app.TotalVariationRecon}
    image = apps[method](kspace, maps, lamda=lamda, max_iter=iterations, device=sigpy.Device(0),
                         show_pbar=False).run()
    return sigpy.to_device(image, sigpy.cpu_device)


def try_peer(call):
    """The call's result, or the exception's text (a peer that fails on this machine is reported, not fatal)."""
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - any failure of the peer library is a table entry
        return f"{type(error).__name__}: {error}"


def run_peer(call, iterations: int, repeats: int):
    """``call(iterations)`` timed after a short warm-up, or the text of its failure."""
    warm = try_peer(partial(call, WARM_UP_ITERATIONS))
    return warm if isinstance(warm, str) else try_peer(lambda: timed(partial(call, iterations), repeats))


def run_case(case: Case, repeats: int, directory: Path, methods: bool = True) -> tuple[list[str], list[str]]:
    """Table rows of the three methods (unless not ``methods``) and one row of the coil-map timings."""
    import numpy as np
    import sigpy
    from sigpy.mri.app import EspiritCalib

    from cloudmri_kernel.quality.metrics import nrmse
    from cloudmri_kernel.recon.coils import espirit_maps

    kspace, mask, calibration, truth = simulate(case, directory)
    shape = (case.matrix, case.matrix)
    maps = np.asarray(espirit_maps(calibration, shape))
    support = ((np.abs(maps) ** 2).sum(axis=0) > 0).astype(np.float32)
    rows = []
    for method, (lamda, iterations) in method_settings().items() if methods else ():
        peers = {"cpu": partial(ours, method, kspace, maps, mask, lamda),
                 "cuda": partial(ours, method, kspace, maps, mask, lamda, device="cuda"),
                 "sigpy": partial(sigpy_gpu, method, kspace, maps, lamda)}
        runs = {name: run_peer(call, iterations, repeats) for name, call in peers.items()}
        cells = []
        for name in ("cpu", "cuda", "sigpy"):
            run = runs[name]
            if isinstance(run, str):
                cells.append(f"failed ({run[:80]})")
                continue
            result = score(run.image, truth, support)
            cells.append(f"{run.seconds:.3f} s, NRMSE {result.nrmse:.4f}, SSIM {result.ssim:.4f}")
        agreement = (nrmse(np.abs(runs["cpu"].image), np.abs(runs["cuda"].image))
                     if not isinstance(runs["cuda"], str) else float("nan"))
        speedup = (runs["cpu"].seconds / runs["cuda"].seconds if not isinstance(runs["cuda"], str)
                   else float("nan"))
        versus_sigpy = (runs["sigpy"].seconds / runs["cuda"].seconds
                        if not isinstance(runs["sigpy"], str) and not isinstance(runs["cuda"], str) else float("nan"))
        rows.append(f"| {case.label} | {method} | " + " | ".join(cells)
                    + f" | {speedup:.1f}× | {versus_sigpy:.2f}× | {agreement:.1e} |")

    def sigpy_maps():
        result = EspiritCalib(kspace, calib_width=CALIBRATION_LINES, thresh=0.02, kernel_width=6, crop=0.95,
                              device=sigpy.Device(0), show_pbar=False).run()
        return sigpy.to_device(result, sigpy.cpu_device)

    espirit = {"cpu": lambda: espirit_maps(calibration, shape),
               "cuda": lambda: espirit_maps(calibration, shape, device="cuda"),
               "sigpy": sigpy_maps}
    cells = []
    for call in espirit.values():
        warm = try_peer(call)
        run = warm if isinstance(warm, str) else timed(call, repeats)
        cells.append(f"failed ({run[:80]})" if isinstance(run, str) else f"{run.seconds:.3f}")
    maps_row = f"| {case.matrix}² ×{case.coils} | " + " | ".join(cells) + " |"
    return rows, [maps_row]


def run_radial(repeats: int, directory: Path) -> str:
    """One row: iterative SENSE (30 CG iterations) on a golden-angle radial phantom, CPU vs GPU."""
    import numpy as np

    from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
    from cloudmri_kernel.mrd.reader import MRDFile, has_flag
    from cloudmri_kernel.quality.metrics import nrmse
    from cloudmri_kernel.recon.iterative import reconstruct_nufft_sense

    spec = PhantomSpec(matrix=RADIAL_MATRIX, coils=RADIAL_COILS, accel=2, trajectory="radial", noise=0.01)
    path = write_phantom(directory / "radial.h5", spec)
    with MRDFile(path) as mrd:
        block = mrd.read_acquisitions()
        maps = mrd.read_array("csm")[0, 0]
    imaging = ~has_flag(block.headers["flags"], "IS_NOISE_MEASUREMENT")
    samples = np.concatenate([d for d, keep in zip(block.data, imaging, strict=True) if keep], axis=1)
    traj = np.concatenate([t for t, keep in zip(block.traj, imaging, strict=True) if keep])
    shape = (RADIAL_MATRIX, RADIAL_MATRIX)
    runs = {}
    for device in ("cpu", "cuda"):
        reconstruct_nufft_sense(samples, traj, shape, maps, max_iter=WARM_UP_ITERATIONS, tol=0.0, device=device)
        runs[device] = timed(lambda d=device: reconstruct_nufft_sense(samples, traj, shape, maps, max_iter=30,
                                                                      tol=0.0, device=d).image, repeats)
    agreement = nrmse(np.abs(runs["cpu"].image), np.abs(runs["cuda"].image))
    return (f"| {RADIAL_MATRIX}² ×{RADIAL_COILS}, {int(imaging.sum())} spokes | {runs['cpu'].seconds:.3f} | "
            f"{runs['cuda'].seconds:.3f} | {runs['cpu'].seconds / runs['cuda'].seconds:.1f}× | {agreement:.1e} |")


def run_grappa(path: Path, repeats: int) -> str:
    """One row: GRAPPA on the real dataset, CPU vs GPU, with the ghost-energy fraction of each image."""
    import numpy as np

    from cloudmri_kernel.quality.metrics import nrmse
    from cloudmri_kernel.recon.coils import rss
    from cloudmri_kernel.recon.engine import SliceTask, reconstruct_slice
    from cloudmri_kernel.recon.fft import centered_ifft
    from cloudmri_kernel.recon.grappa import ghost_energy_fraction, object_support
    from cloudmri_kernel.recon.recipe import GrappaRecipe

    kspace, mask, calibration, accel = read_slice(path)
    support = object_support(rss(centered_ifft(calibration, (-2, -1))))
    runs, ghosts = {}, {}
    for device in ("cpu", "cuda"):
        task = SliceTask(index=(0, 0), recipe=GrappaRecipe(device=device), image_shape=kspace.shape[1:],
                         kspace=kspace, mask=mask, calibration=calibration, acceleration=accel)
        reconstruct_slice(task)
        runs[device] = timed(lambda t=task: np.asarray(reconstruct_slice(t).image), repeats)
        ghosts[device] = ghost_energy_fraction(runs[device].image, support, accel)
    agreement = nrmse(np.abs(runs["cpu"].image), np.abs(runs["cuda"].image))
    return (f"| {path.name} ({kspace.shape[0]} coils, R={accel}) | {runs['cpu'].seconds:.3f} | "
            f"{runs['cuda'].seconds:.3f} | {runs['cpu'].seconds / runs['cuda'].seconds:.1f}× | "
            f"{ghosts['cpu']:.4f} / {ghosts['cuda']:.4f} | {agreement:.1e} |")


def machine() -> list[str]:
    import cupy
    import numpy as np
    import sigpy
    import torch

    return [f"* GPU: {torch.cuda.get_device_name(0)}; CPU: {cpu_model()}, "
            f"{len(os.sched_getaffinity(0))} usable cores, torch using {torch.get_num_threads()} threads",
            f"* Versions: Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
            f"NumPy {np.__version__}, SigPy {sigpy.__version__}, CuPy {cupy.__version__}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 128² case, one repeat, no radial or real data")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and case (median reported)")
    parser.add_argument("--maps-only", action="store_true", help="only the ESPIRiT coil-map table")
    parser.add_argument("--markdown", type=Path, help="also write the tables and the machine here")
    parser.add_argument("--grappa-file", type=Path, default=GRAPPA_FILE, help="real GRAPPA dataset (MRD)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU visible to torch")
    repeats = 1 if args.quick else args.repeats
    started = time.perf_counter()
    rows, map_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for case in QUICK_CASES if args.quick else CASES:
            case_rows, case_maps = run_case(case, repeats, Path(tmp), methods=not args.maps_only)
            rows += case_rows
            map_rows += case_maps
            print(f"{case.label} done after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        radial = None if args.quick or args.maps_only else run_radial(repeats, Path(tmp))
    grappa = (run_grappa(args.grappa_file, repeats)
              if not (args.quick or args.maps_only) and args.grappa_file.exists() else None)
    settings = method_settings()
    lines = [
        *machine(),
        f"* Settings: SENSE λ={settings['sense'][0]:g}, {settings['sense'][1]} CG iterations; L1-wavelet "
        f"λ={settings['l1-wavelet'][0]:g}, {settings['l1-wavelet'][1]} iterations; TV λ={settings['tv'][0]:g}, "
        f"{settings['tv'][1]} iterations; median of {repeats} run(s), image back in host memory.",
    ]
    if rows:
        lines += ["", "| case | method | ours CPU | ours GPU | SigPy GPU | GPU speed-up over our CPU "
                  "| SigPy GPU time / ours | NRMSE GPU vs CPU image |", "|---|---|---|---|---|---:|---:|---:|", *rows]
    lines += [
        "",
        "ESPIRiT maps (kernel 6, 24 calibration lines, threshold 0.02, crop 0.95), median seconds:",
        "",
        "| matrix, coils | ours CPU | ours GPU | SigPy EspiritCalib GPU |",
        "|---|---:|---:|---:|",
        *map_rows,
    ]
    if radial:
        lines += ["", "Radial iterative SENSE (30 CG iterations, NUFFT), median seconds:", "",
                  "| case | CPU | GPU | speed-up | NRMSE GPU vs CPU image |", "|---|---:|---:|---:|---:|", radial]
    if grappa:
        lines += ["", "GRAPPA on the real dataset (kernel 4×5, RSS), median seconds:", "",
                  "| data | CPU | GPU | speed-up | ghost-energy fraction CPU / GPU | NRMSE GPU vs CPU image |",
                  "|---|---:|---:|---:|---:|---:|", grappa]
    lines += ["", f"Methods {', '.join(METHODS)}; whole run {time.perf_counter() - started:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
