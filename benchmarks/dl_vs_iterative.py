"""The unrolled network (`--method dl`, the shipped model) against SENSE and L1-wavelet CS, with BART as the peer.

Two test sets, each method on the same data in the same run:

* phantoms: the single-slice Shepp-Logan cases of ``recon_vs_peers.py`` (128² and 256², 8 coils, R 2/4/6,
  uniform and Poisson-disc lines, 24 calibration lines): out of the network's training distribution (it was
  trained on 64² synthetic brain-like objects) and piecewise constant, the case CS is made for;
* synthetic held-out: 32 samples drawn like the training data but with another seed (64², 8 coils, R4 Poisson),
  the in-distribution case.

Quality is NRMSE and SSIM of the magnitude inside the coil maps' support at its least-squares gain (as in
``recon_vs_peers.py``); time is the median of ``--repeats`` runs per slice, CPU. SENSE and CS use the recipes'
defaults and ESPIRiT maps; BART runs ``pics -R W:7:0:λ`` on the same k-space and maps; DL uses its recipe's
low-resolution maps (what it was trained with).

    python benchmarks/dl_vs_iterative.py --markdown docs/benchmarks/dl_vs_iterative.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial
from pathlib import Path

from recon_vs_peers import Bart, Case, method_settings, ours, score, set_threads, simulate, timed

CASES = [Case(matrix, 8, accel, pattern) for matrix in (128, 256) for accel in (2, 4, 6)
         for pattern in ("uniform", "poisson")]
METHODS = ("DL", "SENSE", "L1-wavelet", "BART L1-wavelet")


def dl(kspace, mask_lines, calibration):
    import numpy as np

    from cloudmri_kernel.recon.coils import lowres_maps
    from cloudmri_kernel.recon.engine import run_network
    from cloudmri_kernel.recon.recipe import DLRecipe

    maps = np.asarray(lowres_maps(calibration, kspace.shape[1:]))
    return run_network(DLRecipe(), kspace, mask_lines, maps)


def phantom_rows(repeats: int, threads: int) -> list[dict]:
    import numpy as np

    from cloudmri_kernel.recon.coils import espirit_maps

    settings = method_settings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bart = Bart(Path(tmp), threads)
        for case in CASES:
            kspace, mask, calibration, truth = simulate(case, bart.directory)
            shape = (case.matrix, case.matrix)
            maps = np.asarray(espirit_maps(calibration, shape))
            support = ((np.abs(maps) ** 2).sum(axis=0) > 0).astype(np.float32)
            lines = np.abs(kspace).max(axis=(0, 2)) > 0
            kspace_file, maps_file = bart.write("kspace", kspace), bart.write("maps", maps)
            lamda_cs, iterations_cs = settings["l1-wavelet"]
            lamda_sense, iterations_sense = settings["sense"]
            dl(kspace, lines, calibration)
            calls = {"DL": partial(dl, kspace, lines, calibration),
                     "SENSE": partial(ours, "sense", kspace, maps, mask, lamda_sense, iterations_sense),
                     "L1-wavelet": partial(ours, "l1-wavelet", kspace, maps, mask, lamda_cs, iterations_cs),
                     "BART L1-wavelet": partial(bart.pics, ["-R", f"W:7:0:{lamda_cs:g}"], iterations_cs,
                                                kspace_file, maps_file)}
            runs = {method: timed(call, repeats) for method, call in calls.items()}
            runs["BART L1-wavelet"].image = bart.read("out")
            for method, run in runs.items():
                result = score(run.image, truth, support)
                rows.append({"case": case.label, "method": method, "nrmse": result.nrmse, "ssim": result.ssim,
                             "seconds": run.seconds})
            print(case.label, {m: round(r["nrmse"], 4) for m, r in zip(runs, rows[-4:], strict=True)}, flush=True)
    return rows


def synthetic_rows(count: int) -> list[dict]:
    import numpy as np
    import torch

    from cloudmri_kernel.quality.metrics import nrmse, ssim
    from cloudmri_kernel.recon import iterative
    from cloudmri_kernel.recon.model_files import load_model
    from cloudmri_kernel.recon.recipe import CSWaveletRecipe, SenseRecipe
    from cloudmri_kernel.recon.synthetic import SyntheticSpec, centred_ifft2, synthetic_dataset

    net, card = load_model("modl-synthetic")
    spec = SyntheticSpec(**card["training"]["spec"])
    samples = synthetic_dataset(spec, count, seed=987_654)
    scores: dict[str, list[tuple[float, float]]] = {m: [] for m in ("DL", "SENSE", "L1-wavelet", "zero-filled")}
    cs, sense = CSWaveletRecipe(), SenseRecipe()
    for sample in samples:
        truth = np.abs(sample.target)[None]
        mask2d = np.broadcast_to(sample.mask[:, None], sample.kspace.shape[1:]).astype(np.float32)
        with torch.no_grad():
            out = net(*(torch.from_numpy(getattr(sample, k)[None]) for k in ("kspace", "mask", "maps")))[0]
        images = {
            "DL": out.abs().numpy(),
            "SENSE": np.abs(iterative.reconstruct_sense(sample.kspace, sample.maps, mask2d, lamda=sense.lamda,
                                                        max_iter=sense.max_iter).image),
            "L1-wavelet": np.abs(iterative.reconstruct_cs_wavelet(
                sample.kspace, sample.maps, mask2d, lamda=cs.lamda, max_iter=cs.max_iter, wavelet=cs.wavelet,
                random_shift=cs.random_shift, coarsest=cs.coarsest).image),
            "zero-filled": np.abs(np.sum(sample.maps.conj() * centred_ifft2(sample.kspace), axis=0)),
        }
        for method, image in images.items():
            scores[method].append((nrmse(truth, image[None]), ssim(truth, image[None])))
    return [{"method": m, "nrmse": statistics.median(v[0] for v in values),
             "ssim": statistics.median(v[1] for v in values)} for m, values in scores.items()]


def markdown(phantoms: list[dict], synthetic: list[dict], args) -> list[str]:
    lines = ["## Phantoms (out of distribution)", "",
             "| case | " + " | ".join(f"{m} NRMSE / SSIM / s" for m in METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for case in dict.fromkeys(r["case"] for r in phantoms):
        cells = {r["method"]: r for r in phantoms if r["case"] == case}
        lines.append(f"| {case} | " + " | ".join(
            f"{cells[m]['nrmse']:.4f} / {cells[m]['ssim']:.3f} / {cells[m]['seconds']:.2f}" for m in METHODS) + " |")
    lines += ["", "| method | median NRMSE | median SSIM | median s per slice | NRMSE / BART's (geometric mean) |",
              "|---|---|---|---|---|"]
    bart = {r["case"]: r["nrmse"] for r in phantoms if r["method"] == "BART L1-wavelet"}
    for method in METHODS:
        rows = [r for r in phantoms if r["method"] == method]
        ratio = statistics.geometric_mean(r["nrmse"] / bart[r["case"]] for r in rows)
        lines.append(f"| {method} | {statistics.median(r['nrmse'] for r in rows):.4f} | "
                     f"{statistics.median(r['ssim'] for r in rows):.3f} | "
                     f"{statistics.median(r['seconds'] for r in rows):.2f} | {ratio:.3f} |")
    lines += ["", f"## Synthetic held-out ({args.synthetic} samples, in distribution)", "",
              "| method | median NRMSE | median SSIM |", "|---|---|---|"]
    lines += [f"| {r['method']} | {r['nrmse']:.4f} | {r['ssim']:.3f} |" for r in synthetic]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--synthetic", type=int, default=32)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    set_threads(args.threads)
    phantoms = phantom_rows(args.repeats, args.threads)
    synthetic = synthetic_rows(args.synthetic)
    lines = markdown(phantoms, synthetic, args)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("# Deep-learning reconstruction against SENSE, CS and BART\n\n"
                                 f"`python benchmarks/dl_vs_iterative.py` ({args.repeats} repeats, {args.threads} "
                                 "thread(s), CPU). See the script's docstring for what is compared.\n\n"
                                 + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
