"""Does a model trained across hospitals beat each hospital's own, and how close does it get to pooled data?

Three sites with deliberately different data (coil count, noise, acceleration and pattern, contrast) train the
same unrolled network (MoDL, :mod:`cloudmri_kernel.recon.unrolled`) three ways, with the same number of passes
over each site's data:

(a) local: each site alone, on its own training split;
(b) federated, every site's data staying at the site (:mod:`cloudmri_kernel.federated`, in-process grid):
    Flower FedAvg and FedProx, one local epoch per round; the server optimizers FedAdam (Reddi et al. 2021) and
    FedAvgM (Hsu et al. 2019; momentum 0.9, effective server step 1); FedAvg with more local epochs per
    round at the same passes (fewer rounds); and FedAvg followed by personalization (FedAvg-FT: each site
    fine-tunes the final global model on its own training split, Yu et al. 2020), scored on each site's own
    held-out split only;
(c) central: one model on all training data pooled.

Every model is scored on every site's held-out split (SSIM and PSNR, fastMRI definitions), and the zero-filled
SENSE combination is the floor. Wall time per method is reported. Target (issue 8): federated within 0.01 SSIM
of central, and better than local-only on every site.

Run it on one thread at low priority where the machine is shared (``--threads``, default 1)::

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/federated_vs_central.py --train 64 --test 16 --rounds 20
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


@contextlib.contextmanager
def models_dir_in(folder: str):
    """Sites keep their personalized models in their models directory: a temporary one here."""
    before = os.environ.get("CLOUDMRI_MODELS_DIR")
    os.environ["CLOUDMRI_MODELS_DIR"] = folder
    try:
        yield
    finally:
        if before is None:
            del os.environ["CLOUDMRI_MODELS_DIR"]
        else:
            os.environ["CLOUDMRI_MODELS_DIR"] = before


def federated_arms(rounds: int, local_epochs: int, personalize_epochs: int, optimizers: dict) -> dict[str, dict]:
    """Name → ExperimentConfig settings of every federated arm (the same passes over each site's data)."""
    adam, momentum = optimizers["fedadam"], optimizers["fedavgm"]
    arms = {"federated fedavg": dict(strategy="fedavg"),
            f"FedAvg-FT: fedavg {rounds - personalize_epochs} rounds + {personalize_epochs} epoch(s) fine-tuning "
            "at each site": dict(strategy="fedavg", rounds=rounds - personalize_epochs,
                                 personalize_epochs=personalize_epochs),
            "federated fedprox": dict(strategy="fedprox", proximal_mu=0.01),
            "federated fedadam" + (f" (server lr {adam['server_lr']:g})" if adam else ""): dict(strategy="fedadam",
                                                                                               **adam),
            "federated fedavgm" + (f" (momentum {momentum['server_momentum']:g}, server lr "
                                   f"{momentum['server_lr']:g})" if momentum else ""):
                dict(strategy="fedavgm", **momentum)}
    if local_epochs > 1:
        arms[f"federated fedavg, {local_epochs} epochs x {rounds // local_epochs} rounds"] = dict(
            strategy="fedavg", local_epochs=local_epochs, rounds=rounds // local_epochs)
    return arms


def run(matrix: int, train_count: int, test_count: int, rounds: int, seed: int, personalize_epochs: int,
        local_epochs: int, optimizers: dict) -> tuple[dict, dict]:
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

    for arm, settings in federated_arms(rounds, local_epochs, personalize_epochs, optimizers).items():
        settings = {"rounds": rounds, **settings}
        with tempfile.TemporaryDirectory() as tmp, models_dir_in(tmp):
            result = run_experiment(ExperimentConfig(name=f"arm-{len(seconds)}", seed=seed, architecture=arch,
                                                     min_sites=3, **settings), configs, tmp)
            net, _ = load_model(result.final.path, expected_sha256=result.final.sha256)
        if result.personalization is None:
            seconds[arm] = result.seconds
            results[arm] = scores(net, configs)
        else:
            # Each personalized model is its site's: scored on that site's held-out split only (by the site).
            seconds[arm] = result.seconds + result.personalization.seconds
            results[arm] = {site: model.after for site, model in result.personalization.sites.items()}

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
             f"{args.rounds} passes over each site's data (rounds x local epochs for federated, epochs otherwise), "
             f"seed {args.seed}, {args.threads} thread(s). FedAvg-FT's personalized models are scored on their own "
             "site's held-out split only.",
             "", "| model | " + " | ".join(f"{n} SSIM / PSNR" for n in names) + " | mean SSIM |",
             "|---|" + "---|" * (len(names) + 1)]
    for method, per_site in results.items():
        cells = [f"{per_site[n]['ssim']:.4f} / {per_site[n]['psnr']:.2f}" if n in per_site else "–" for n in names]
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {statistics.mean(per_site[n]['ssim'] for n in names if n in per_site):.4f} |")
    own = {n: results[f"local ({n})"][n]["ssim"] for n in names}
    lines += ["", f"Each site's own model on its own held-out split: mean SSIM {statistics.mean(own.values()):.4f}.",
              ""]
    central = results["central (pooled)"]
    for method, fed in results.items():
        if not method.startswith(("federated", "FedAvg-FT")):
            continue
        gap = statistics.mean(central[n]["ssim"] - fed[n]["ssim"] for n in names)
        wins = [n for n in names if fed[n]["ssim"] > own[n]]
        met = gap <= 0.01 and len(wins) == len(names)
        lines.append(f"- {method}: mean SSIM {gap:+.4f} below central (target: within 0.01); better than the "
                     f"site's own model on {len(wins)} of {len(names)} sites ({', '.join(wins) or 'none'}): "
                     f"targets {'met' if met else 'not met'}.")
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
    parser.add_argument("--personalize-epochs", type=int, default=2,
                        help="FedAvg-FT: FedAvg for ROUNDS minus this many rounds, then this many epochs of "
                        "fine-tuning at each site (the same passes over each site's data).")
    parser.add_argument("--local-epochs", type=int, default=2,
                        help="Local epochs per round of the 'more local epochs' FedAvg arm (rounds / this rounds); "
                        "1 leaves the arm out.")
    parser.add_argument("--fedadam-lr", type=float, help="FedAdam's server step (default: the library's).")
    parser.add_argument("--fedavgm", type=float, nargs=2, metavar=("MOMENTUM", "LR"),
                        help="FedAvgM's server momentum and step (default: the library's).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads.")
    parser.add_argument("--markdown", type=Path, help="Write the tables here too.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optimizers = {"fedadam": {} if args.fedadam_lr is None else {"server_lr": args.fedadam_lr},
                  "fedavgm": {} if args.fedavgm is None else dict(zip(("server_momentum", "server_lr"), args.fedavgm,
                                                                      strict=True))}
    results, seconds = run(args.matrix, args.train, args.test, args.rounds, args.seed, args.personalize_epochs,
                           args.local_epochs, optimizers)
    lines = markdown(results, seconds, args)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("# Federated vs local vs central training\n\n"
                                 f"`python benchmarks/federated_vs_central.py --train {args.train} --test {args.test} "
                                 f"--rounds {args.rounds}`, CPU.\n\n"
                                 + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
