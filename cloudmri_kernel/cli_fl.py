"""``cloudmri fl``: federated training of the reconstruction network across sites (Flower)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from cloudmri_kernel.cli import app, out, reports_errors

fl_app = typer.Typer(help="Federated learning across hospital sites (Flower).", no_args_is_help=True)
app.add_typer(fl_app, name="fl")


def load_experiment(path: Path):
    """(ExperimentConfig, [SiteConfig]) from a YAML file: the experiment's keys and a ``sites`` list."""
    import yaml

    from cloudmri_kernel.errors import UsageError
    from cloudmri_kernel.federated.experiment import experiment_from_mapping
    from cloudmri_kernel.federated.sites import SiteConfig

    if not path.is_file():
        raise UsageError("no such experiment file", path)
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"the experiment file is not valid YAML ({exc})", path) from None
    if not isinstance(content, dict) or not isinstance(content.get("sites", []), list):
        raise UsageError("an experiment file is a mapping; its 'sites' is a list", path)
    sites = content.pop("sites", [])
    try:
        return experiment_from_mapping(content), [SiteConfig(**site) for site in sites]
    except TypeError as exc:
        raise UsageError(f"unknown or missing site setting ({exc})", path) from None


@fl_app.command("simulate")
@reports_errors
def fl_simulate(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML: strategy, rounds, ... and a 'sites' list.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the global model of every round "
                                                 "(default: the models directory's NAME/).")] = None,
    record: Annotated[bool, typer.Option(help="Record the experiment and its models in the catalog.")] = True,
) -> None:
    """Run a federated experiment with every site in this process, each on its own data only."""
    from cloudmri_kernel.catalog.db import Catalog
    from cloudmri_kernel.errors import UsageError
    from cloudmri_kernel.federated.experiment import run_experiment, validation_score
    from cloudmri_kernel.recon.model_files import models_dir

    config, sites = load_experiment(experiment)
    if not sites:
        raise UsageError("a simulation needs a non-empty 'sites' list", experiment)
    catalog = Catalog.open() if record else None
    try:
        result = run_experiment(config, sites, out_dir or models_dir() / config.name, catalog=catalog,
                                on_round=lambda r: out.print(
                                    f"round {r.round}: trained {', '.join(r.trained) or 'nobody'}"
                                    + "".join(f"; {site} failed ({why})" for site, why in r.failed.items())
                                    + "".join(f"; {site} rejected ({why})" for site, why in r.rejected.items())
                                    + (f"; privacy spent ε = {r.epsilon:.2f} at δ = {config.dp_delta:g}"
                                       if r.epsilon is not None else ""),
                                    highlight=False))
    finally:
        if catalog is not None:
            catalog.engine.dispose()
    validated = any("val-ssim" in metrics for r in result.rounds for metrics in r.evaluate.values())
    table = Table("round", "site", "train loss", "held-out SSIM", "PSNR (dB)", *(("val. SSIM",) if validated else ()))
    for r in result.rounds:
        for site, metrics in sorted(r.evaluate.items()):
            table.add_row(str(r.round), site, f"{r.train.get(site, {}).get('train-loss', float('nan')):.4f}",
                          f"{metrics['ssim']:.4f}", f"{metrics['psnr']:.2f}",
                          *((f"{metrics['val-ssim']:.4f}" if "val-ssim" in metrics else "",) if validated else ()))
    out.print(table)
    if result.personalization is not None:
        epochs, patience = result.personalization.epochs, result.personalization.patience
        budget = f"up to {epochs} epoch(s), stopping {patience} after the best" if patience else f"{epochs} epoch(s)"
        title = (f"personalized: fine-tuning at each site for {budget}; held-out scores before → after"
                 if epochs else "each site's model (the global denoiser with the site's own λ), held-out scores "
                 "before → after")
        personalized = Table("site", "SSIM", "PSNR (dB)", *(("epoch kept/run",) if epochs else ()),
                             Column("model SHA-256", no_wrap=True, min_width=12), title=title)
        for site, model in sorted(result.personalization.sites.items()):
            personalized.add_row(site, f"{model.before['ssim']:.4f} → {model.after['ssim']:.4f}",
                                 f"{model.before['psnr']:.2f} → {model.after['psnr']:.2f}",
                                 *((f"{model.kept_epoch}/{model.epochs_run}",) if epochs else ()),
                                 model.sha256[:12])
        out.print(personalized)
        for site, why in sorted(result.personalization.failed.items()):
            out.print(f"{site} did not personalize: {why}", highlight=False)
        for model in list(result.personalization.sites.values())[:1]:
            out.print(f"each site keeps its personalized model: {Path(model.path).parent}/SITE.pt",
                      highlight=False)
    if result.kept_round is not None:
        ran = len(result.rounds)
        why = (f"stopped after round {ran} of up to {config.rounds}, {config.rounds_patience} without a better one"
               if ran < config.rounds else f"the best of all {ran} rounds")
        out.print(f"kept round {result.kept_round}: the sites' best mean validation SSIM "
                  f"({validation_score(result.rounds[result.kept_round - 1]):.4f}); {why}", highlight=False)
    out.print(f"experiment {result.experiment_id or '(not recorded)'}: model {result.kept.path} "
              f"sha256 {result.kept.sha256} ({result.seconds:.0f} s); use it with "
              f"`cloudmri recon --method dl --model {result.kept.sha256[:12]}`", highlight=False)


def _exec(command: list[str], env: dict[str, str]) -> None:
    """Replace this process by a Flower executable (its signals, output and exit status become this command's)."""
    import os

    out.print(" ".join(command), highlight=False)
    sys.stdout.flush()
    os.execve(command[0], command, env)


@fl_app.command("superlink")
@reports_errors
def fl_superlink(
    port: Annotated[int, typer.Option(help="Port of the SuperLink's API (Fleet, Control, ServerApp).")] = 9093,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 unless sites connect from elsewhere.")]
    = "127.0.0.1",
    insecure: Annotated[bool, typer.Option(help="No TLS: loopback tests only.")] = False,
    ssl_certfile: Annotated[Path | None, typer.Option(help="Server certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="Server private key (PEM, mode 0600).")] = None,
    ssl_ca_certfile: Annotated[Path | None, typer.Option(help="CA certificate (PEM).")] = None,
    database: Annotated[Path | None, typer.Option(help="SuperLink state database (default: in memory).")] = None,
    node_auth: Annotated[bool, typer.Option(help="Only SuperNodes with registered keys may connect.")] = False,
) -> None:
    """Start the aggregator (Flower SuperLink); the data dir's catalog records the experiments it runs."""
    from cloudmri_kernel.federated.deployment import flower_env, superlink_command

    _exec(superlink_command(port, host, insecure=insecure, certfile=ssl_certfile, keyfile=ssl_keyfile,
                            ca_certfile=ssl_ca_certfile, database=database, node_auth=node_auth), flower_env())


@fl_app.command("site")
@reports_errors
def fl_site(
    site: Annotated[str, typer.Option("--site", help="This hospital's site name.")],
    superlink: Annotated[str, typer.Option(help="The SuperLink's HOST:PORT.")] = "127.0.0.1:9093",
    data_dir: Annotated[Path | None, typer.Option(help="The site's platform data dir: train on its store's raw "
                                                  "files. Without it, on synthetic data (--set).")] = None,
    setting: Annotated[list[str] | None, typer.Option("--set", help="Site setting KEY=VALUE (matrix, coils, "
                                                      "accel, calib, noise, pattern, contrast, train_count, "
                                                      "test_count, val_count, seed); repeat.")] = None,
    port: Annotated[int, typer.Option(help="Local port of the SuperNode's ClientApp API.")] = 9094,
    insecure: Annotated[bool, typer.Option(help="No TLS: loopback tests only.")] = False,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate to verify the SuperLink.")] = None,
    auth_private_key: Annotated[Path | None, typer.Option(help="This node's private key (node authentication).")]
    = None,
) -> None:
    """Start one hospital's node (Flower SuperNode): it trains on this site's data only."""
    from cloudmri_kernel.federated.deployment import flower_env, site_from_settings, supernode_command

    config = site_from_settings(site, setting or [], data_dir)
    _exec(supernode_command(config, superlink, port, insecure=insecure, root_certificates=root_certificates,
                            auth_private_key=auth_private_key), flower_env())


@fl_app.command("site-key")
@reports_errors
def fl_site_key(
    site: Annotated[str, typer.Option("--site", help="The site the key is for (the files' names).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for SITE.key (0600) and SITE.pub.")] = Path("."),
) -> None:
    """Make a site's key pair for SuperNode authentication (EC P-384, OpenSSH format)."""
    from cloudmri_kernel.federated.deployment import make_site_key

    private, public = make_site_key(out_dir, site)
    out.print(f"private key (keep at the site, --auth-private-key): {private}\n"
              f"public key (cloudmri fl register-site): {public}")


@fl_app.command("register-site")
@reports_errors
def fl_register_site(
    public_key: Annotated[Path, typer.Argument(help="The site's public key (SITE.pub of `cloudmri fl site-key`).")],
    superlink: Annotated[str, typer.Option(help="The SuperLink's HOST:PORT.")] = "127.0.0.1:9093",
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate to verify the SuperLink.")] = None,
    name: Annotated[str | None, typer.Option(help="The site's name in the SuperLink's list.")] = None,
) -> None:
    """Let a site in: register its public key with a SuperLink started with --node-auth."""
    import subprocess
    import tempfile

    from cloudmri_kernel.errors import UsageError
    from cloudmri_kernel.federated.deployment import flower_env, register_command, write_connection

    if root_certificates is None:
        raise UsageError("registering a site needs TLS: --root-certificates CA.pem (SuperNode authentication "
                         "works over TLS only)")
    with tempfile.TemporaryDirectory(prefix="flwr-home-") as home:
        write_connection(Path(home), superlink, root_certificates=root_certificates)
        completed = subprocess.run(register_command(public_key, name), env={**flower_env(), "FLWR_HOME": home},
                                   check=False)
    raise typer.Exit(completed.returncode)


@fl_app.command("run")
@reports_errors
def fl_run(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML (its 'sites' list is ignored: the sites are "
                                               "the connected SuperNodes).")],
    superlink: Annotated[str, typer.Option(help="The SuperLink's HOST:PORT.")] = "127.0.0.1:9093",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where the aggregator writes the global models "
                                                 "(default: the models directory's NAME/).")] = None,
    insecure: Annotated[bool, typer.Option(help="No TLS: loopback tests only.")] = False,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate to verify the SuperLink.")] = None,
    record: Annotated[bool, typer.Option(help="Record the experiment in the aggregator's catalog.")] = True,
) -> None:
    """Run an experiment on a deployment (Flower SuperLink and SuperNodes) and stream its log."""
    import getpass
    import subprocess
    import tempfile

    from cloudmri_kernel.federated.deployment import flower_env, run_command, write_connection
    from cloudmri_kernel.recon.model_files import models_dir

    config, _ = load_experiment(experiment)
    with tempfile.TemporaryDirectory(prefix="flwr-home-") as home:
        write_connection(Path(home), superlink, insecure=insecure, root_certificates=root_certificates)
        command = run_command(config, out_dir or models_dir() / config.name, created_by=getpass.getuser(),
                              record=record)
        completed = subprocess.run(command, env={**flower_env(), "FLWR_HOME": home}, check=False)
    raise typer.Exit(completed.returncode)
