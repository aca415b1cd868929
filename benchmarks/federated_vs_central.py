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
    held-out split only; FedAvg with each site keeping its own data-consistency weight λ (``site-lamda``, FedBN's
    idea, Li et al. 2021), alone and followed by fine-tuning (``site-lamda-ft``);
(c) central: one model on all training data pooled.

Every model is scored on every site's held-out split (SSIM and PSNR, fastMRI definitions), and the zero-filled
SENSE combination is the floor. Wall time per method is reported. Target (issue 8): federated within 0.01 SSIM
of central, and better than local-only on every site.

Every arm uses Adam at ``--lr`` (``--lamda-lr`` for log λ); federated sites keep their Adam state between rounds
(the library's default). With ``--val N`` every site draws N validation images and every arm's checkpoint is
chosen on them (local and central every ``--check-every`` epochs, a federated arm's round, each site's
fine-tuning epoch), never on the held-out images it is scored on. Arms run ``--jobs`` at a time, each in its own
process with ``--threads`` torch threads; ``--arms`` picks the federated arms (local and central always run).
``--seed`` takes several seeds (initialization and batch order): every arm runs for each, and a summary gives each
site's SSIM as mean ± standard deviation over seeds and, per federated arm, the paired difference to each site's
own model (mean ± standard error) and the seeds in which the targets were met. With ``--patience`` every arm trains
until its validation score stops improving (local, central, each site's fine-tuning), and with
``--rounds-patience`` every federated arm's rounds stop when the sites' mean validation SSIM does (fine-tuning then
starts from the best round); ``--json`` keeps a run's scores so that ``--combine`` can summarize seeds run by
separate commands. The latest runs in
``docs/benchmarks/federated_vs_central.md`` (runs 9 and 10, seeds 0-2 and 3-5) and their six-seed summary::

    nice -n 19 python benchmarks/federated_vs_central.py --train 16 --test 16 --val 16 --rounds 960 \
        --check-every 20 --lr 3e-3 --lamda-lr 0.03 --personalize-epochs 720 --patience 120 --local-epochs 1 \
        --arms site-lamda-ft --jobs 2 --seed 0 1 2 --json docs/benchmarks/federated_vs_central_run9.json
    # the same with --seed 3 4 5 --json docs/benchmarks/federated_vs_central_run10.json, then
    python benchmarks/federated_vs_central.py --combine docs/benchmarks/federated_vs_central_run9.json \
        docs/benchmarks/federated_vs_central_run10.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from cloudmri_kernel.federated.experiment import ExperimentConfig, run_experiment, validation_score
from cloudmri_kernel.federated.sites import SiteConfig, load_site_data, load_site_splits
from cloudmri_kernel.recon.model_files import load_model
from cloudmri_kernel.recon.training import evaluate, train_keeping_best, zero_filled_metrics
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig


def sites(matrix: int, train_count: int, test_count: int, val_count: int = 0) -> list[SiteConfig]:
    common = dict(matrix=matrix, train_count=train_count, test_count=test_count, val_count=val_count)
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


#: Arms that ``--arms`` can name; local and central always run (they are what the targets compare with).
ARMS = ("fedavg", "fedavg-ft", "fedprox", "fedadam", "fedavgm", "fedavg-epochs", "site-lamda", "site-lamda-ft")


def federated_arms(rounds: int, local_epochs: int, personalize_epochs: int, optimizers: dict,
                   chosen: tuple[str, ...] = ARMS, patience: int = 0, rounds_patience: int = 0) -> dict[str, dict]:
    """Name → ExperimentConfig settings of every chosen federated arm (the same passes over each site's data; with
    ``patience``, the same most passes, fine-tuning stopping like local and central training; with
    ``rounds_patience``, every arm's rounds stop that many after the sites' best mean validation SSIM)."""
    adam, momentum = optimizers["fedadam"], optimizers["fedavgm"]
    up_to = "up to " if patience else ""
    before = rounds - personalize_epochs
    first = (f"up to {before} rounds (stopping {rounds_patience} after the best)" if rounds_patience
             else f"{before} rounds")
    arms = {"fedavg": ("federated fedavg", dict(strategy="fedavg")),
            "fedavg-ft": (f"FedAvg-FT: fedavg {first} + {up_to}{personalize_epochs} "
                          "epoch(s) fine-tuning at each site",
                          dict(strategy="fedavg", rounds=rounds - personalize_epochs,
                               personalize_epochs=personalize_epochs, personalize_patience=patience)),
            "fedprox": ("federated fedprox", dict(strategy="fedprox", proximal_mu=0.01)),
            "fedadam": ("federated fedadam" + (f" (server lr {adam['server_lr']:g})" if adam else ""),
                        dict(strategy="fedadam", **adam)),
            "fedavgm": ("federated fedavgm" + (f" (momentum {momentum['server_momentum']:g}, server lr "
                                               f"{momentum['server_lr']:g})" if momentum else ""),
                        dict(strategy="fedavgm", **momentum)),
            "fedavg-epochs": (f"federated fedavg, {local_epochs} epochs x {rounds // local_epochs} rounds",
                              dict(strategy="fedavg", local_epochs=local_epochs, rounds=rounds // local_epochs)),
            "site-lamda": ("FedAvg, site λ (each site keeps its data-consistency weight)",
                           dict(strategy="fedavg", local_lamda=True)),
            "site-lamda-ft": (f"FedAvg-FT, site λ: {first} + {up_to}{personalize_epochs} epoch(s) fine-tuning",
                              dict(strategy="fedavg", local_lamda=True, rounds=rounds - personalize_epochs,
                                   personalize_epochs=personalize_epochs, personalize_patience=patience))}
    left_out = {"fedavg-epochs"} if local_epochs <= 1 else set()
    left_out |= {"fedavg-ft", "site-lamda-ft"} if personalize_epochs < 1 else set()
    return {name: {**settings, "rounds_patience": rounds_patience}
            for name, settings in (arms[a] for a in chosen if a not in left_out)}


@dataclass(frozen=True)
class Setup:
    """What every arm shares: the sites' data, the network, the training settings."""

    matrix: int
    train_count: int
    test_count: int
    rounds: int
    lr: float
    lamda_lr: float | None
    seed: int
    threads: int
    val_count: int = 0
    check_every: int = 10
    patience: int = 0
    arch: MoDLConfig = MoDLConfig(unrolls=4, cg_iterations=6, features=24, depth=5)

    def sites(self) -> list[SiteConfig]:
        return sites(self.matrix, self.train_count, self.test_count, self.val_count)

    def fresh(self) -> MoDL:
        torch.manual_seed(self.seed)
        return MoDL(self.arch)


def train_alone(setup: Setup, name: str, site_names: tuple[str, ...]) -> tuple[str, dict, float, str]:
    """One network trained on the named sites' training splits pooled (one site: local; all: central); with
    validation splits, the checkpoint (every ``check_every`` epochs) with the best validation SSIM is scored, and
    with ``patience`` training stops that many epochs after it."""
    torch.set_num_threads(setup.threads)
    configs = [s for s in setup.sites() if s.name in site_names]
    started = time.perf_counter()
    net = setup.fresh()
    samples = [sample for s in configs for sample in load_site_splits(s)[0]]
    validation = [sample for s in configs for sample in load_site_splits(s)[1]]
    kept = train_keeping_best(net, samples, validation, setup.rounds, every=setup.check_every, seed=setup.seed,
                              patience=setup.patience, lr=setup.lr, lamda_lr=setup.lamda_lr)
    return name, scores(net, setup.sites()), time.perf_counter() - started, f"epoch {kept.epoch} of {kept.ran}"


def train_federated(setup: Setup, name: str, settings: dict) -> tuple[str, dict, float, str]:
    """One federated arm on the in-process grid; an arm whose sites keep models of their own (fine-tuned, or with
    their own λ) is scored by each site on its own split. With validation splits a global model is chosen by the
    sites' mean validation SSIM over the rounds (the experiment's own choice with ``rounds_patience``, from which
    sites then personalize), and fine-tuning sites keep their best epoch on their own."""
    torch.set_num_threads(setup.threads)
    configs = setup.sites()
    settings = {"rounds": setup.rounds, **settings}
    with tempfile.TemporaryDirectory() as tmp, models_dir_in(tmp):
        result = run_experiment(ExperimentConfig(name="arm", seed=setup.seed, architecture=setup.arch,
                                                 lr=setup.lr, lamda_lr=setup.lamda_lr, min_sites=3, **settings),
                                configs, tmp)
        chosen = result.kept
        if setup.val_count and result.kept_round is None:
            chosen = max(result.models[1:], key=lambda model: validation_score(result.rounds[model.round - 1]))
        net, _ = load_model(chosen.path, expected_sha256=chosen.sha256)
    round_kept = f"round {chosen.round}" + (f" of {len(result.rounds)}" if settings["rounds_patience"] else "")
    if result.personalization is None:
        return name, scores(net, configs), result.seconds, round_kept
    kept = ", ".join(f"{site} {model.kept_epoch} of {model.epochs_run}"
                     for site, model in result.personalization.sites.items())
    return (name, {site: model.after for site, model in result.personalization.sites.items()},
            result.seconds + result.personalization.seconds,
            f"{round_kept}, fine-tuning epochs kept: {kept}")


def run(setups: list[Setup], arms: dict[str, dict], jobs: int) -> dict[int, tuple[dict, dict, dict]]:
    """Every arm for every seed, ``jobs`` at a time in their own processes; seed → (scores, seconds, checkpoints),
    each in a fixed order."""
    configs = setups[0].sites()
    tasks = [(train_alone, f"local ({s.name})", (s.name,)) for s in configs]
    tasks += [(train_federated, name, settings) for name, settings in arms.items()]
    tasks.append((train_alone, "central (pooled)", tuple(s.name for s in configs)))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = {setup.seed: [pool.submit(function, setup, name, argument) for function, name, argument in tasks]
                for setup in setups}
        finished = {seed: [future.result() for future in futures] for seed, futures in done.items()}
    floor = {s.name: zero_filled_metrics(load_site_data(s)[1]) for s in configs}
    runs = {}
    for seed, arms_done in finished.items():
        results: dict[str, dict] = {"zero-filled": floor}
        seconds: dict[str, float] = {"local (all three)": 0.0}
        chosen: dict[str, str] = {}
        for name, per_site, elapsed, checkpoint in arms_done:
            results[name] = per_site
            chosen[name] = checkpoint
            if name.startswith("local"):
                seconds["local (all three)"] += elapsed
            else:
                seconds[name] = elapsed
        runs[seed] = results, seconds, chosen
    return runs


def markdown(results: dict, seconds: dict, chosen: dict, args, seed: int) -> list[str]:
    """One seed's tables: every model on every site's held-out split, the targets, checkpoints, wall times."""
    names = sorted(next(iter(results.values())))
    budget = (f"up to {args.rounds} passes over each site's data, stopping {args.patience} epochs after the best "
              "validation score" if args.patience else f"{args.rounds} passes over each site's data")
    lines = [f"Three sites, {args.train} training and {args.test} held-out {args.matrix}x{args.matrix} images each, "
             f"{budget} (rounds x local epochs for federated, epochs otherwise), "
             f"Adam at learning rate {args.lr:g} (λ: {args.lamda_lr or args.lr:g}), seed {seed}, {args.jobs} "
             f"arm(s) at a time with {args.threads} "
             f"thread(s) each. Models kept at a site (FedAvg-FT, site λ) are scored on "
             "their own site's held-out split only.",
             "", "| model | " + " | ".join(f"{n} SSIM / PSNR" for n in names) + " | mean SSIM |",
             "|---|" + "---|" * (len(names) + 1)]
    for method, per_site in results.items():
        cells = [f"{per_site[n]['ssim']:.4f} / {per_site[n]['psnr']:.2f}" if n in per_site else "–" for n in names]
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {statistics.mean(per_site[n]['ssim'] for n in names if n in per_site):.4f} |")
    own = own_scores(results)
    lines += ["", f"Each site's own model on its own held-out split: mean SSIM {statistics.mean(own.values()):.4f}.",
              ""]
    central = results["central (pooled)"]
    for method, fed in results.items():
        if not is_federated(method):
            continue
        gap = statistics.mean(central[n]["ssim"] - fed[n]["ssim"] for n in names)
        wins = [n for n in names if fed[n]["ssim"] > own[n]]
        met = gap <= 0.01 and len(wins) == len(names)
        lines.append(f"- {method}: mean SSIM {-gap:+.4f} vs central (target: at most 0.01 below); better than the "
                     f"site's own model on {len(wins)} of {len(names)} sites ({', '.join(wins) or 'none'}): "
                     f"targets {'met' if met else 'not met'}.")
    if args.val:
        lines += ["", f"Checkpoints chosen on {args.val} validation images per site (every {args.check_every} "
                  "epochs for local and central; 'K of R': kept epoch K of R run): "
                  + "; ".join(f"{name}: {what}" for name, what in chosen.items()) + "."]
    lines += ["", "| method | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in seconds.items()]
    return lines


def own_scores(results: dict) -> dict[str, float]:
    """Each site's own (local) model's SSIM on its own held-out split."""
    return {n: results[f"local ({n})"][n]["ssim"] for n in sorted(next(iter(results.values())))}


def is_federated(method: str) -> bool:
    return method.startswith(("federated", "FedAvg"))


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def paired(differences: list[float]) -> str:
    """Mean ± standard error of paired differences (one per seed)."""
    return f"{statistics.mean(differences):+.4f} ± {statistics.stdev(differences) / len(differences) ** 0.5:.4f}"


def across_seeds(runs: dict[int, dict]) -> list[str]:
    """Several seeds' scores summarized: mean ± standard deviation over seeds of each site's SSIM (each site's own
    model, central, every federated arm), and for each federated arm the gap to central and the paired difference
    to each site's own model (mean ± its standard error over seeds), with the seeds in which each target was met."""
    seeds = sorted(runs)
    names = sorted(next(iter(runs[seeds[0]].values())))
    own = {seed: own_scores(results) for seed, results in runs.items()}
    rows = {"each site's own model": {seed: own[seed] for seed in seeds},
            **{method: {seed: {n: runs[seed][method][n]["ssim"] for n in names} for seed in seeds}
               for method in runs[seeds[0]] if method == "central (pooled)" or is_federated(method)}}
    lines = [f"Across seeds {', '.join(map(str, seeds))}: held-out SSIM, mean ± standard deviation over seeds.", "",
             "| model | " + " | ".join(names) + " | mean SSIM |", "|---|" + "---|" * (len(names) + 1)]
    for method, per_seed in rows.items():
        cells = [spread([per_seed[seed][n] for seed in seeds]) for n in names]
        lines.append(f"| {method} | " + " | ".join(cells) + " | "
                     + spread([statistics.mean(per_seed[seed].values()) for seed in seeds]) + " |")
    lines.append("")
    central = rows["central (pooled)"]
    for method, fed in rows.items():
        if not is_federated(method):
            continue
        gaps = {seed: statistics.mean(central[seed][n] - fed[seed][n] for n in names) for seed in seeds}
        wins = {n: [seed for seed in seeds if fed[seed][n] > own[seed][n]] for n in names}
        met = [seed for seed in seeds if gaps[seed] <= 0.01 and all(seed in wins[n] for n in names)]
        versus_own = ", ".join(f"{n} {paired([fed[seed][n] - own[seed][n] for seed in seeds])} "
                               f"({len(wins[n])}/{len(seeds)})" for n in names)
        lines.append(f"- {method}: {-statistics.mean(gaps.values()):+.4f} vs central (worst seed "
                     f"{-max(gaps.values()):+.4f}); vs each site's own model, mean paired difference ± standard "
                     f"error (seeds better): {versus_own}; both targets met in {len(met)} of {len(seeds)} seeds.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=48)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="Seeds (initialization and batch order; the sites' images stay the same). With several, "
                        "every arm runs for each and a summary across seeds follows the tables.")
    parser.add_argument("--val", type=int, default=0,
                        help="Validation images per site: every arm's checkpoint (epoch, round, fine-tuning epoch) "
                        "is then chosen on them, never on the held-out images it is scored on.")
    parser.add_argument("--check-every", type=int, default=10,
                        help="With --val: epochs between the checkpoints local and central training choose from.")
    parser.add_argument("--personalize-epochs", type=int, default=2,
                        help="FedAvg-FT: FedAvg for ROUNDS minus this many rounds, then this many epochs of "
                        "fine-tuning at each site (the same passes over each site's data).")
    parser.add_argument("--local-epochs", type=int, default=2,
                        help="Local epochs per round of the 'more local epochs' FedAvg arm (rounds / this rounds); "
                        "1 leaves the arm out.")
    parser.add_argument("--fedadam-lr", type=float, help="FedAdam's server step (default: the library's).")
    parser.add_argument("--fedavgm", type=float, nargs=2, metavar=("MOMENTUM", "LR"),
                        help="FedAvgM's server momentum and step (default: the library's).")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate, every arm and site.")
    parser.add_argument("--lamda-lr", type=float, help="Adam's step for log λ, MoDL's data-consistency weight, "
                        "every arm and site (default: --lr).")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"Federated arms, comma-separated, from {', '.join(ARMS)} (local and central always run).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per arm.")
    parser.add_argument("--jobs", type=int, default=1, help="Arms trained at the same time, each in its own process "
                        "(wall times are then measured under each other's load).")
    parser.add_argument("--patience", type=int, default=0,
                        help="With --val: local and central training and each site's fine-tuning stop once this many "
                        "epochs pass without a better validation score (ROUNDS and --personalize-epochs are then "
                        "ceilings); 0 runs the whole budget.")
    parser.add_argument("--rounds-patience", type=int, default=0,
                        help="With --val: every federated arm's rounds stop once this many pass without a better mean "
                        "validation SSIM of the sites, and fine-tuning starts from the best round (FedAvg-FT's "
                        "rounds are then a ceiling); 0 runs every round.")
    parser.add_argument("--markdown", type=Path, help="Write the tables here too.")
    parser.add_argument("--json", type=Path, help="Write every seed's scores and the settings here (for --combine).")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="Train nothing: summarize runs written with --json (the same settings, different seeds, "
                        "e.g. from several commands or machines) across all their seeds.")
    args = parser.parse_args()
    if args.combine:
        try:
            runs = combined(args.combine)
        except (OSError, ValueError, KeyError) as error:
            parser.error(f"--combine: {error}")
        publish(["### Across seeds", ""] + across_seeds(runs), args.markdown)
        return
    chosen = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    unknown = sorted(set(chosen) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    for option in ("patience", "rounds_patience"):
        if getattr(args, option) < 0 or (getattr(args, option) and not args.val):
            parser.error(f"--{option.replace('_', '-')} needs validation images (--val) and is 0 or more")
    optimizers = {"fedadam": {} if args.fedadam_lr is None else {"server_lr": args.fedadam_lr},
                  "fedavgm": {} if args.fedavgm is None else dict(zip(("server_momentum", "server_lr"), args.fedavgm,
                                                                      strict=True))}
    if len(set(args.seed)) != len(args.seed):
        parser.error("--seed: each seed once")
    setups = [Setup(args.matrix, args.train, args.test, args.rounds, args.lr, args.lamda_lr, seed, args.threads,
                    args.val, args.check_every, args.patience) for seed in args.seed]
    arms = federated_arms(args.rounds, args.local_epochs, args.personalize_epochs, optimizers, chosen, args.patience,
                          args.rounds_patience)
    runs = run(setups, arms, args.jobs)
    lines: list[str] = []
    for seed, (results, seconds, checkpoints) in runs.items():
        lines += ([f"### Seed {seed}", ""] if len(runs) > 1 else []) + markdown(results, seconds, checkpoints, args,
                                                                              seed) + [""]
    if len(runs) > 1:
        lines += ["### Across seeds", ""] + across_seeds({seed: results for seed, (results, _, _) in runs.items()})
    if args.json:
        write_atomically(args.json, json.dumps({"settings": settings_of(args), "runs": {
            seed: results for seed, (results, _, _) in runs.items()}}, indent=1))
    publish(lines, args.markdown)


#: Options that change nothing a run measures: runs that differ only in these can be combined.
NOT_SETTINGS = frozenset({"seed", "jobs", "threads", "markdown", "json", "combine"})


def settings_of(args: argparse.Namespace) -> dict:
    return {key: value for key, value in sorted(vars(args).items()) if key not in NOT_SETTINGS}


def combined(files: list[Path]) -> dict[int, dict]:
    """Seed → every model's scores, from runs written with ``--json``; refused when their settings differ, a seed
    repeats, or fewer than two seeds result."""
    runs: dict[int, dict] = {}
    settings: dict | None = None
    for file in files:
        content = json.loads(file.read_text())
        if settings is not None and content["settings"] != settings:
            differ = sorted(key for key in settings.keys() | content["settings"].keys()
                            if settings.get(key) != content["settings"].get(key))
            raise ValueError(f"{file} was run with other settings than {files[0]} ({', '.join(differ)})")
        settings = content["settings"]
        for seed, results in content["runs"].items():
            if int(seed) in runs:
                raise ValueError(f"seed {seed} of {file} is in an earlier file too: each seed once")
            runs[int(seed)] = results
    if len(runs) < 2:
        raise ValueError(f"a summary across seeds needs two seeds or more, the files hold {len(runs)}")
    return runs


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def publish(lines: list[str], path: Path | None) -> None:
    """Print the tables, and with ``--markdown`` write them under the command that made them."""
    print("\n".join(lines))
    if path:
        write_atomically(path, "# Federated vs local vs central training\n\n"
                         f"`python {' '.join(sys.argv)}`, CPU.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
