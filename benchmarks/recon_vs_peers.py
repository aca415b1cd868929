"""Iterative reconstruction (SENSE, L1-wavelet, total variation) against BART and SigPy, on the same inputs.

All three run in this one process (BART as its ``bart`` command) on the same simulated phantoms: Shepp-Logan,
birdcage coils, 1 % correlated noise, 24 calibration lines, uniform or Poisson-disc undersampling, written to MRD
and read back with the workbench's own reader. Matched conditions:

* the same coil maps: ESPIRiT (:func:`cloudmri_kernel.recon.coils.espirit_maps`) once per case, given to BART
  ``pics`` as a ``.cfl`` and to SigPy as an array;
* the same k-space, calibration lines included, and the same sampling (BART and SigPy take it, as ours does,
  from the nonzero samples);
* the same objectives, λ and iteration counts, those of the workbench's recipes (SENSE: λ=0, 30 CG iterations;
  L1-wavelet and TV: λ=0.005, 100 iterations), with no early stopping (ours with ``tol=0``). BART gets
  ``-w 1`` so that it does not divide the data by its own scale estimate: its λ is then in the units of the
  data, as ours and SigPy's. For BART's TV (ADMM) ``-i`` counts applications of the normal operator, CG steps
  included, so 100 is the same work as our 100 primal-dual steps; BART's ADMM may also stop earlier on its
  residual test;
* 2 threads for everyone: ``torch.set_num_threads``, ``OMP_NUM_THREADS`` (BART, OpenMP/BLAS), and
  ``NUMBA_NUM_THREADS`` (SigPy computes in NumPy, whose FFT is single-threaded).

Scoring: magnitudes, zeroed where the shared maps vanish (the same mask for every method; ours already returns
zero there), scaled by their least-squares gain onto the ground truth |phantom| (estimated maps fix the image scale
only up to a gain near 1; all three get the same treatment), then NRMSE and SSIM as fastMRI defines them
(:mod:`cloudmri_kernel.quality.metrics`).

Timing: median of ``--repeats`` runs of the reconstruction call only (ours, SigPy: the function or
``App(...).run()``, after one untimed 2-iteration warm-up per case; the first case is also run once untimed).
BART: the wall time of the ``bart pics`` process, which includes its start and reading and writing its ``.cfl``
files; the start-up of an empty command (``bart version``) is reported separately.

The real GRAPPA dataset in ../shared/data (no ground truth) gives times and the ghost-energy fraction, a
reference-free aliasing measure, of our GRAPPA, our SENSE and BART's ``pics`` SENSE.

    python benchmarks/recon_vs_peers.py --repeats 3 --markdown recon_vs_peers.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRAPPA_FILE = REPO.parent / "shared" / "data" / "siemens_ssfp_grappa_r3.h5"
CALIBRATION_LINES = 24
NOISE = 0.01
PEERS = ("ours", "BART", "SigPy")
METHODS = ("sense", "l1-wavelet", "tv")
WARM_UP_ITERATIONS = 2


@dataclass(frozen=True)
class Case:
    matrix: int
    coils: int
    accel: int
    pattern: str

    @property
    def label(self) -> str:
        return f"{self.matrix}² ×{self.coils} R{self.accel} {self.pattern}"


#: 24 cases, about 15 minutes on 2 cores.
FULL_GRID = [Case(matrix, coils, accel, pattern) for matrix in (128, 256) for coils in (8, 16)
             for accel in (2, 4, 6) for pattern in ("uniform", "poisson")]
QUICK_GRID = [Case(128, 8, 4, "poisson")]


@dataclass
class Timed:
    seconds: float
    image: object


@dataclass
class Score:
    nrmse: float
    ssim: float
    gain: float
    nrmse_unmasked: float


@dataclass
class Row:
    case: str
    method: str
    scores: dict[str, Score]
    seconds: dict[str, float]


def set_threads(threads: int) -> None:
    """Before NumPy, torch or numba are imported: every thread pool gets ``threads``."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)


def timed(call: Callable[[], object], repeats: int) -> Timed:
    runs, image = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        runs.append(time.perf_counter() - start)
        image = result if image is None else image
    return Timed(statistics.median(runs), image)


def merge_calibration(kspace, mask, calibration):
    """k-space and (ky,) mask with the calibration-only lines filled in: every acquired line, for every method."""
    import numpy as np

    if calibration is None:
        return kspace, mask
    extra = (calibration != 0).any(axis=(0, 2)) & ~mask
    return np.where(extra[:, None], calibration, kspace).astype(np.complex64), mask | extra


def read_slice(path: Path):
    """(kspace (coils, ky, kx), imaging mask (ky,), calibration (coils, ky, kx) or None, acceleration) of the
    first slice, readout oversampling removed."""
    from cloudmri_kernel.mrd.kspace import read_cartesian
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.recon.operators import remove_readout_oversampling

    with MRDFile(path) as mrd:
        sorted_kspace = read_cartesian(mrd)
        encoding = mrd.header.encoding[0]
        recon_x = int(encoding.reconSpace.matrixSize.x)
        factors = encoding.parallelImaging.accelerationFactor if encoding.parallelImaging else None
    kspace = remove_readout_oversampling(sorted_kspace.kspace[0, :, 0], recon_x)
    calibration = sorted_kspace.calibration
    if calibration is not None:
        calibration = remove_readout_oversampling(calibration[0, :, 0], recon_x)
    accel = int(factors.kspace_encoding_step_1) if factors is not None else 1
    return kspace, sorted_kspace.mask[0, 0], calibration, accel


def simulate(case: Case, directory: Path):
    """(kspace with calibration lines, mask (ky,), calibration block, |phantom|) of a single-slice phantom."""
    import numpy as np

    from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.recon.grappa import calibration_region

    spec = PhantomSpec(matrix=case.matrix, coils=case.coils, accel=case.accel, calib=CALIBRATION_LINES,
                       pattern=case.pattern, noise=NOISE)
    path = write_phantom(directory / "phantom.h5", spec)
    kspace, mask, calibration, _ = read_slice(path)
    with MRDFile(path) as mrd:
        truth = np.abs(mrd.read_array("phantom")[0, 0]).astype(np.float32)
    kspace, mask = merge_calibration(kspace, mask, calibration)
    return kspace, mask, np.asarray(calibration_region(calibration)), truth


def score(image, truth, support) -> Score:
    """Magnitude, masked to the maps' support, at its least-squares gain onto the truth."""
    import numpy as np

    from cloudmri_kernel.quality.metrics import nrmse, ssim

    def fitted(values):
        gain = float(np.vdot(values, truth) / max(float(np.vdot(values, values)), 1e-30))
        return (gain * values).astype(np.float32), gain

    magnitude = np.abs(np.asarray(image)).astype(np.float32)
    masked, gain = fitted(magnitude * support)
    unmasked, _ = fitted(magnitude)
    return Score(nrmse(truth, masked), ssim(truth, masked), gain, nrmse(truth, unmasked))


class Bart:
    """The ``bart`` command on files in one directory."""

    def __init__(self, directory: Path, threads: int):
        self.directory, self.threads = directory, threads

    def write(self, name: str, values) -> Path:
        from cloudmri_kernel.recon.bart import to_bart_kspace, write_cfl

        write_cfl(self.directory / name, to_bart_kspace(values))
        return self.directory / name

    def read(self, name: str):
        from cloudmri_kernel.recon.bart import from_bart_image, read_cfl

        return from_bart_image(read_cfl(self.directory / name))

    def run(self, *args) -> None:
        from cloudmri_kernel.recon.bart import run_bart

        run_bart(*args, threads=self.threads)

    def pics(self, regularization: list[str], iterations: int, kspace: Path, maps: Path, out: str = "out") -> None:
        """``bart pics`` with no data rescaling (-w 1), so λ is in the units of the data."""
        self.run("pics", "-d0", "-w", "1", "-S", *regularization, "-i", str(iterations), kspace, maps,
                 self.directory / out)


def method_settings() -> dict[str, tuple[float, int]]:
    """(λ, iterations) of each method: the workbench recipes' defaults."""
    from cloudmri_kernel.recon.recipe import CSTVRecipe, CSWaveletRecipe, SenseRecipe

    return {"sense": (SenseRecipe().lamda, SenseRecipe().max_iter),
            "l1-wavelet": (CSWaveletRecipe().lamda, CSWaveletRecipe().max_iter),
            "tv": (CSTVRecipe().lamda, CSTVRecipe().max_iter)}


def ours(method: str, kspace, maps, mask, lamda: float, iterations: int, device: str = "cpu"):
    from cloudmri_kernel.recon import iterative
    from cloudmri_kernel.recon.recipe import CSWaveletRecipe

    if method == "sense":
        return iterative.reconstruct_sense(kspace, maps, mask, lamda=lamda, max_iter=iterations, tol=0.0,
                                          device=device).image
    if method == "l1-wavelet":
        recipe = CSWaveletRecipe()  # what `cloudmri recon --method cs-wavelet` runs: its wavelet and shifts
        return iterative.reconstruct_cs_wavelet(kspace, maps, mask, lamda=lamda, max_iter=iterations, tol=0.0,
                                                wavelet=recipe.wavelet, random_shift=recipe.random_shift,
                                                coarsest=recipe.coarsest,
                                                device=device).image
    return iterative.reconstruct_cs_tv(kspace, maps, mask, lamda=lamda, max_iter=iterations, tol=0.0,
                                      device=device).image


def sigpy_recon(method: str, kspace, maps, lamda: float, iterations: int):
    from sigpy.mri import app

    apps = {"sense": app.SenseRecon, "l1-wavelet": app.L1WaveletRecon, "tv": app.TotalVariationRecon}
    return apps[method](kspace, maps, lamda=lamda, max_iter=iterations, show_pbar=False).run()


def bart_regularization(method: str, lamda: float) -> list[str]:
    if method == "sense":
        return ["-l2", "-r", f"{lamda:g}"]
    return ["-R", f"{'W' if method == 'l1-wavelet' else 'T'}:7:0:{lamda:g}"]


def run_case(case: Case, repeats: int, bart: Bart, maps_timing: bool,
             methods: tuple[str, ...] = METHODS) -> tuple[list[Row], dict | None, float]:
    """Rows of ``methods``, optionally the coil-map timings, and the net acceleration."""
    import numpy as np
    from sigpy.mri.app import EspiritCalib

    from cloudmri_kernel.recon.coils import espirit_maps

    kspace, mask, calibration, truth = simulate(case, bart.directory)
    shape = (case.matrix, case.matrix)
    maps = np.asarray(espirit_maps(calibration, shape))
    support = ((np.abs(maps) ** 2).sum(axis=0) > 0).astype(np.float32)
    kspace_file, maps_file = bart.write("kspace", kspace), bart.write("maps", maps)
    rows = []
    for method, (lamda, iterations) in method_settings().items():
        if method not in methods:
            continue
        ours(method, kspace, maps, mask, lamda, WARM_UP_ITERATIONS)
        sigpy_recon(method, kspace, maps, lamda, WARM_UP_ITERATIONS)
        calls = {"ours": partial(ours, method, kspace, maps, mask, lamda, iterations),
                 "BART": partial(bart.pics, bart_regularization(method, lamda), iterations, kspace_file, maps_file),
                 "SigPy": partial(sigpy_recon, method, kspace, maps, lamda, iterations)}
        runs = {peer: timed(call, repeats) for peer, call in calls.items()}
        runs["BART"].image = bart.read("out")
        rows.append(Row(case.label, method, {p: score(runs[p].image, truth, support) for p in PEERS},
                        {p: runs[p].seconds for p in PEERS}))
    timing = None
    if maps_timing:
        timing = {
            "ours": timed(lambda: espirit_maps(calibration, shape), repeats).seconds,
            "BART": timed(lambda: bart.run("ecalib", "-m1", "-k", "6", "-r", str(CALIBRATION_LINES), "-t", "0.02",
                                           "-c", "0.95", kspace_file, bart.directory / "ecalib"), repeats).seconds,
            "SigPy": timed(lambda: EspiritCalib(kspace, calib_width=CALIBRATION_LINES, thresh=0.02, kernel_width=6,
                                                crop=0.95, show_pbar=False).run(), repeats).seconds,
        }
    return rows, timing, case.matrix / int(mask.sum())


def run_grappa_file(path: Path, repeats: int, bart: Bart) -> tuple[str, list[tuple[str, float | None, float]]]:
    """A description of the data, and (method, median seconds or None, ghost-energy fraction) for each method on
    a real GRAPPA dataset with embedded calibration lines."""
    import numpy as np
    from sigpy.mri.app import SenseRecon

    from cloudmri_kernel.recon.coils import espirit_maps, rss
    from cloudmri_kernel.recon.engine import SliceTask, reconstruct_slice
    from cloudmri_kernel.recon.fft import centered_ifft
    from cloudmri_kernel.recon.grappa import calibration_region, ghost_energy_fraction, object_support
    from cloudmri_kernel.recon.recipe import GrappaRecipe

    kspace, mask, calibration, accel = read_slice(path)
    shape = kspace.shape[1:]
    support = object_support(rss(centered_ifft(calibration, (-2, -1))))
    full, full_mask = merge_calibration(kspace, mask, calibration)
    lamda, iterations = method_settings()["sense"]
    block = np.asarray(calibration_region(calibration))
    maps = np.asarray(espirit_maps(block, shape))
    maps_uncropped = np.asarray(espirit_maps(block, shape, crop=0.0))
    full_file = bart.write("grappa_kspace", full)
    ours_maps_file = bart.write("grappa_maps", maps)
    recipe = GrappaRecipe()
    task = SliceTask(index=(0, 0), recipe=recipe, image_shape=shape, kspace=kspace, mask=mask,
                     calibration=calibration, acceleration=accel)

    def sense(maps_):
        return ours("sense", full, maps_, full_mask, lamda, iterations)

    results = []

    def add(name: str, run: Timed | None, image) -> None:
        results.append((name, None if run is None else run.seconds, ghost_energy_fraction(image, support, accel)))

    zero_filled = rss(centered_ifft(kspace * mask[:, None], (-2, -1)))
    add("zero-filled, imaging lines only (RSS)", None, zero_filled)
    reconstruct_slice(task)
    run = timed(lambda: reconstruct_slice(task).image, repeats)
    add(f"ours: GRAPPA, kernel {recipe.kernel[0]}×{recipe.kernel[1]} (RSS)", run, run.image)
    sense(maps)
    run = timed(lambda: sense(maps), repeats)
    add("ours: SENSE, our ESPIRiT maps", run, run.image)
    run = timed(lambda: bart.pics(bart_regularization("sense", lamda), iterations, full_file, ours_maps_file),
                repeats)
    add("BART: pics SENSE, our ESPIRiT maps", run, bart.read("out"))
    SenseRecon(full, maps, lamda=lamda, max_iter=WARM_UP_ITERATIONS, show_pbar=False).run()
    run = timed(lambda: SenseRecon(full, maps, lamda=lamda, max_iter=iterations, show_pbar=False).run(), repeats)
    add("SigPy: SenseRecon, our ESPIRiT maps", run, run.image)
    for name, crop_args in (("defaults", []), ("-c 0, uncropped", ["-c", "0"])):
        ecalib = timed(partial(bart.run, "ecalib", "-m1", *crop_args, full_file, bart.directory / "ecalib"), repeats)
        run = timed(partial(bart.pics, bart_regularization("sense", lamda), iterations, full_file,
                            bart.directory / "ecalib"), repeats)
        add(f"BART: ecalib ({name}, {ecalib.seconds:.2f} s) + pics SENSE", run, bart.read("out"))
    run = timed(lambda: sense(maps_uncropped), repeats)
    add("ours: SENSE, our ESPIRiT maps uncropped (crop=0)", run, run.image)
    description = (f"{path.name} ({kspace.shape[0]} coils, GRAPPA R={accel}, {block.shape[1]} embedded calibration "
                   f"lines, {shape[1]}×{shape[0]})")
    return description, results


def bart_startup(repeats: int, bart: Bart) -> float:
    return timed(lambda: bart.run("version"), max(repeats, 5)).seconds


def cpu_model() -> str:
    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]
    return models[0] if models else platform.processor()


def machine_info(threads: int) -> list[str]:
    import numpy as np
    import sigpy
    import torch

    from cloudmri_kernel.recon.bart import run_bart

    return [f"* CPU: {cpu_model()}, {os.cpu_count()} cores "
            f"({len(os.sched_getaffinity(0))} usable); {threads} threads for every method",
            f"* Versions: Python {platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}, "
            f"SigPy {sigpy.__version__}, BART {run_bart('version').strip()}"]


def fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "nan"


def phantom_table(rows: list[Row], nets: dict[str, float]) -> list[str]:
    lines = ["| case | method | NRMSE ours | NRMSE BART | NRMSE SigPy | SSIM ours | SSIM BART | SSIM SigPy "
             "| s ours | s BART | s SigPy | time ours/BART | time ours/SigPy | NRMSE ours/best peer |",
             "|---|---|" + "---:|" * 12]
    for row in rows:
        best_peer = min(row.scores["BART"].nrmse, row.scores["SigPy"].nrmse)
        lines.append(
            f"| {row.case} (net R {nets[row.case]:.1f}) | {row.method} | "
            + " | ".join(fmt(row.scores[p].nrmse) for p in PEERS) + " | "
            + " | ".join(fmt(row.scores[p].ssim) for p in PEERS) + " | "
            + " | ".join(f"{row.seconds[p]:.3f}" for p in PEERS) + " | "
            f"{row.seconds['ours'] / row.seconds['BART']:.2f} | {row.seconds['ours'] / row.seconds['SigPy']:.2f} | "
            f"{row.scores['ours'].nrmse / best_peer:.3f} |")
    return lines


def summary(rows: list[Row]) -> list[str]:
    """Geometric means of the ratios per method, the fitted gains and the effect of the support mask."""
    lines = ["| method | time ours/BART (geo. mean, range) | time ours/SigPy (geo. mean, range) "
             "| NRMSE ours/best peer (geo. mean, range) | cases NRMSE ours ≤ 1.02× best peer |",
             "|---|---:|---:|---:|---:|"]

    def stats(values: list[float]) -> str:
        mean = math.exp(sum(math.log(v) for v in values) / len(values))
        return f"{mean:.2f} ({min(values):.2f}–{max(values):.2f})"

    for method in METHODS:
        group = [r for r in rows if r.method == method]
        if not group:
            continue
        quality = [r.scores["ours"].nrmse / min(r.scores["BART"].nrmse, r.scores["SigPy"].nrmse) for r in group]
        lines.append(f"| {method} | {stats([r.seconds['ours'] / r.seconds['BART'] for r in group])} | "
                     f"{stats([r.seconds['ours'] / r.seconds['SigPy'] for r in group])} | {stats(quality)} | "
                     f"{sum(q <= 1.02 for q in quality)} of {len(group)} |")
    lines.append("")
    for peer in PEERS:
        gains = [r.scores[peer].gain for r in rows]
        effect = [r.scores[peer].nrmse_unmasked / r.scores[peer].nrmse for r in rows]
        lines.append(f"* {peer}: least-squares gains {min(gains):.3f}–{max(gains):.3f}; NRMSE without the support "
                     f"mask / with it: {min(effect):.2f}–{max(effect):.2f}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one case (128², 8 coils, R=4 Poisson), one repeat, no real-data part (for tests)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and case (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every method")
    parser.add_argument("--markdown", type=Path, help="also write the tables, command line and machine here")
    parser.add_argument("--grappa-file", type=Path, default=GRAPPA_FILE, help="real GRAPPA dataset (MRD)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to run (default all); the real-data part runs only with sense")
    parser.add_argument("--matrices", nargs="+", type=int, choices=(128, 256), default=[128, 256],
                        help="phantom matrix sizes of the full grid to run (default both)")
    args = parser.parse_args()
    if shutil.which("bart") is None:
        raise SystemExit("needs BART's `bart` command on PATH (apt-get install bart; ./workbench setup does)")
    set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    methods = tuple(m for m in METHODS if m in args.methods)
    grid = [case for case in (QUICK_GRID if args.quick else FULL_GRID) if case.matrix in args.matrices]
    if not grid:
        raise SystemExit(f"no case of {'the quick' if args.quick else 'the full'} grid has matrix {args.matrices}")
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows, nets, map_times = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        bart = Bart(Path(tmp), args.threads)
        startup = bart_startup(repeats, bart)
        # Every method, BART's process included, ran ~40 % slower in the first case of a fresh process than when
        # the same case was repeated; one untimed pass keeps that out of the table.
        run_case(grid[0], 1, bart, False, methods)
        for number, case in enumerate(grid, 1):
            config = (case.matrix, case.coils)
            case_rows, timing, nets[case.label] = run_case(case, repeats, bart, config not in map_times, methods)
            if timing is not None:
                map_times[config] = timing
            rows.extend(case_rows)
            print(f"[{number}/{len(grid)}] {case.label} done after {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
        grappa = None
        if not args.quick and "sense" in methods:
            if args.grappa_file.exists():
                grappa = run_grappa_file(args.grappa_file, repeats, bart)
            else:
                print(f"no real-data part: {args.grappa_file} not found", file=sys.stderr)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    settings = method_settings()
    lines = [
        "* Phantoms: Shepp-Logan with smooth phase, birdcage coils, 1 % correlated noise, 24 calibration lines "
        "(net R: all acquired lines over the matrix). Ground truth |phantom|.",
        f"* Settings: SENSE λ={settings['sense'][0]:g}, {settings['sense'][1]} CG iterations; L1-wavelet "
        f"λ={settings['l1-wavelet'][0]:g}, {settings['l1-wavelet'][1]} iterations; TV λ={settings['tv'][0]:g}, "
        f"{settings['tv'][1]} iterations; the same ESPIRiT maps for all. Times: median of {repeats} run(s), "
        f"seconds. BART's times include its process start (`bart version`: {startup:.3f} s) and its .cfl I/O.",
        "* NRMSE/SSIM: magnitudes masked to the maps' support and scaled by their least-squares gain onto the "
        "truth, for every method alike. Ratios < 1: ours is faster / better.",
        "",
        *phantom_table(rows, nets),
        "",
        "Per method over all cases:",
        "",
        *summary(rows),
    ]
    if map_times:
        lines += ["", "Coil maps (ESPIRiT, kernel 6, 24×24 calibration, threshold 0.02, crop 0.95, one set), "
                  "median seconds; BART `ecalib` includes its process start:", "",
                  "| matrix, coils | ours espirit_maps | BART ecalib | SigPy EspiritCalib |", "|---|---:|---:|---:|"]
        lines += [f"| {m}² ×{c} | {t['ours']:.3f} | {t['BART']:.3f} | {t['SigPy']:.3f} |"
                  for (m, c), t in map_times.items()]
    if grappa:
        description, grappa_rows = grappa
        lines += ["", f"Real data: {description}. No ground truth: ghost energy fraction outside the object where the "
                  "aliases of uniform undersampling land "
                  "(`ghost_energy_fraction`; lower is better). SENSE: 30 CG iterations with all acquired lines. "
                  "SENSE images are zero where the maps are cropped, which hides ghosts there; the uncropped rows "
                  "do not.", "", "| method | seconds (median) | ghost energy (% of image) |", "|---|---:|---:|"]
        lines += [f"| {name} | {'–' if seconds is None else f'{seconds:.3f}'} | {100 * ghost:.3g} |"
                  for name, seconds, ghost in grappa_rows]
    lines += ["", *machine_info(args.threads),
              f"* Load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f}; total {elapsed:.0f} s."]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        command = shlex.join(["python", "benchmarks/recon_vs_peers.py", *sys.argv[1:]])
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"# Reconstruction against BART and SigPy\n\n`{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
