"""Does a model trained across hospitals beat each hospital's own, and how close does it get to pooled data?

Three sites with deliberately different data (coil count, noise, acceleration and pattern, contrast) train the
same unrolled network (MoDL, :mod:`cloudmri_kernel.recon.unrolled`) three ways, with the same number of passes
over each site's data:

(a) local: each site alone, on its own training split;
(b) federated: Flower FedAvg and FedProx, one local epoch per round, every site's data staying at the site
    (:mod:`cloudmri_kernel.federated`, in-process grid);
(c) central: one model on all training data pooled.

Every model is scored on every site's held-out split (SSIM and PSNR, fastMRI definitions), and the zero-filled
SENSE combination is the floor. Wall time per method is reported. Target (issue 8): federated within 0.01 SSIM
of central, and better than local-only on every site.

    python benchmarks/federated_vs_central.py --markdown docs/benchmarks/federated_vs_central.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cloudmri_kernel.federated.experiment import ExperimentConfig, run_experiment
from cloudmri_kernel.federated.sites import SiteConfig, load_site_data
from cloudmri_kernel.recon.model_files import load_model
from cloudmri_kernel.recon.training import evaluate, train, zero_filled_metrics
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig


def sites(matrix: int, train_count: int, test_count: int) -> list[SiteConfig]:
    common = dict(matrix=matrix, train_count=train_count, test_count=test_count)
    return [SiteConfig("site-a", coils=8, noise=0.01, accel=4, pattern="poisson", contrast="t1", calib=12, seed=11,
                       **common),
            SiteConfig("site-b", coils=4, noise=0.03, accel=3, pattern="uniform", contrast="t2", calib=12, seed=22,
                       **common),
            SiteConfig("site-c", coils=12, noise=0.02, accel=5, pattern="poisson", contrast="t2", calib=10, seed=33,
                       **common)]


def scores(net: MoDL, configs: list[SiteConfig]) -> dict[str, dict]:
    return {s.name: evaluate(net, load_site_data(s)[1]) for s in configs}


def run(matrix: int, train_count: int, test_count: int, rounds: int, seed: int) -> tuple[dict, dict]:
    configs = sites(matrix, train_count, test_count)
    arch = MoDLConfig(unrolls=4, cg_iterations=6, features=24, depth=5)
    results: dict[str, dict[str, dict]] = {"zero-filled": {s.name: zero_filled_metrics(load_site_data(s)[1])
                                                           for s in configs}}
    seconds: dict[str, float] = {}

    def fresh() -> MoDL:
        torch.manual_seed(seed)
        return MoDL(arch)

    started = time.perf_counter()
    for s in configs:
        net = fresh()
        train(net, load_site_data(s)[0], epochs=rounds, seed=seed)
        results[f"local ({s.name})"] = scores(net, configs)
    seconds["local (all three)"] = time.perf_counter() - started

    for strategy in ("fedavg", "fedprox"):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_experiment(ExperimentConfig(name=strategy, strategy=strategy, rounds=rounds, seed=seed,
                                                     architecture=arch, min_sites=3, proximal_mu=0.01),
                                    configs, tmp)
            net, _ = load_model(result.final.path)
        seconds[f"federated {strategy}"] = result.seconds
        results[f"federated {strategy}"] = scores(net, configs)

    started = time.perf_counter()
    net = fresh()
    pooled = [sample for s in configs for sample in load_site_data(s)[0]]
    train(net, pooled, epochs=rounds, seed=seed)
    seconds["central (pooled)"] = time.perf_counter() - started
    results["central (pooled)"] = scores(net, configs)
    return results, seconds


def markdown(results: dict, seconds: dict, args) -> list[str]:
    names = sorted(next(iter(results.values())))
    lines = [f"Three sites, {args.train} training and {args.test} held-out {args.matrix}x{args.matrix} images each, "
             f"{args.rounds} passes over each site's data (rounds for federated, epochs otherwise), seed {args.seed}.",
             "", "| model | " + " | ".join(f"{n} SSIM / PSNR" for n in names) + " | mean SSIM |",
             "|---|" + "---|" * (len(names) + 1)]
    for method, per_site in results.items():
        cells = [f"{per_site[n]['ssim']:.4f} / {per_site[n]['psnr']:.2f}" for n in names]
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {statistics.mean(per_site[n]['ssim'] for n in names):.4f} |")
    central = results["central (pooled)"]
    for strategy in ("fedavg", "fedprox"):
        fed = results[f"federated {strategy}"]
        gap = statistics.mean(central[n]["ssim"] - fed[n]["ssim"] for n in names)
        wins = [n for n in names if fed[n]["ssim"] > results[f"local ({n})"][n]["ssim"]]
        lines += ["", f"- {strategy}: mean SSIM {gap:+.4f} below central (target: within 0.01); better than the "
                  f"site's own model on {len(wins)} of {len(names)} sites ({', '.join(wins) or 'none'})."]
    lines += ["", "| method | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in seconds.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=48)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="Write the tables here too.")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results, seconds = run(args.matrix, args.train, args.test, args.rounds, args.seed)
    lines = markdown(results, seconds, args)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("# Federated vs local vs central training\n\n"
                                 "`python benchmarks/federated_vs_central.py` (defaults), CPU.\n\n"
                                 + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
