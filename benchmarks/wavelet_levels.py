"""L1-wavelet quality against BART with the recipe's coarse scale of 16 pixels and with the most levels.

(The recipe's 16 pixels give 3 levels at 128² and 4 at 256²; BART's ``pics`` itself takes 4 levels at 128² —
see ``wavelet_gap.py`` — so neither column is BART's own level count at 128².)

Quality only (no timing), on the 24 phantoms and the same ESPIRiT maps as ``recon_vs_peers.py``; BART runs
``pics -R W:7:0:λ`` on the same files in the same run. It shows what the recipe's ``coarsest`` setting does:

    python benchmarks/wavelet_levels.py --markdown wavelet_levels.md
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from recon_vs_peers import FULL_GRID, Bart, bart_regularization, method_settings, score, set_threads, simulate


def run(threads: int) -> list[str]:
    import numpy as np

    from cloudmri_kernel.recon.coils import espirit_maps
    from cloudmri_kernel.recon.iterative import reconstruct_cs_wavelet
    from cloudmri_kernel.recon.recipe import CSWaveletRecipe

    recipe = CSWaveletRecipe()
    lamda, iterations = method_settings()["l1-wavelet"]
    rows, ratios = [], {"16": [], "max": []}
    with tempfile.TemporaryDirectory() as tmp:
        bart = Bart(Path(tmp), threads)
        for case in FULL_GRID:
            kspace, mask, calibration, truth = simulate(case, bart.directory)
            maps = np.asarray(espirit_maps(calibration, (case.matrix, case.matrix)))
            support = ((np.abs(maps) ** 2).sum(axis=0) > 0).astype(np.float32)
            scores = {}
            for name, coarsest in (("16", recipe.coarsest), ("max", None)):
                image = reconstruct_cs_wavelet(kspace, maps, mask, lamda=lamda, max_iter=iterations, tol=0.0,
                                               wavelet=recipe.wavelet, random_shift=recipe.random_shift,
                                               coarsest=coarsest).image
                scores[name] = score(image, truth, support).nrmse
            bart.pics(bart_regularization("l1-wavelet", lamda), iterations, bart.write("kspace", kspace),
                      bart.write("maps", maps))
            scores["BART"] = score(bart.read("out"), truth, support).nrmse
            for name in ratios:
                ratios[name].append(scores[name] / scores["BART"])
            rows.append(f"| {case.label} | {scores['16']:.4f} | {scores['max']:.4f} | {scores['BART']:.4f} | "
                        f"{scores['16'] / scores['BART']:.3f} | {scores['max'] / scores['BART']:.3f} |")

    def geometric_mean(values: list[float]) -> float:
        return math.exp(sum(math.log(v) for v in values) / len(values))

    return ["| case | NRMSE coarsest 16 (recipe) | NRMSE most levels | NRMSE BART | 16 / BART | most / BART |",
            "|---|---:|---:|---:|---:|---:|", *rows, "",
            *(f"* {label}: NRMSE / BART geometric mean {geometric_mean(ratios[key]):.3f} "
              f"({min(ratios[key]):.3f}–{max(ratios[key]):.3f}); ≤ 1.02 in {sum(r <= 1.02 for r in ratios[key])} "
              f"of {len(ratios[key])} cases"
              for key, label in (("16", "coarse scale ≥ 16 (the recipe)"), ("max", "most levels (before)")))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    set_threads(args.threads)
    text = "\n".join(run(args.threads))
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
