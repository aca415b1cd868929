"""Personalization after federated training (FedAvg-FT, Yu et al. 2020) and the server optimizers FedAdam and
FedAvgM: each site fine-tunes the final global model in its own ClientApp, keeps it, and reports its held-out
scores before and after; the experiment and the catalog record them per site."""

import os
import subprocess

import pytest
import torch
from flwr.clientapp import ClientApp
from sqlalchemy import select
from typer.testing import CliRunner

from cloudmri_kernel.catalog.db import Catalog
from cloudmri_kernel.catalog.models import Experiment
from cloudmri_kernel.cli import app as cli
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated.aggregation import make_strategy
from cloudmri_kernel.federated.experiment import (
    FIRST_NODE_ID,
    ExperimentConfig,
    experiment_from_mapping,
    run_experiment,
)
from cloudmri_kernel.federated.simulation import InProcessGrid
from cloudmri_kernel.federated.site import PERSONALIZE, SITE_LAMDA, personalized_path
from cloudmri_kernel.federated.site import app as site_app
from cloudmri_kernel.federated.sites import load_site_splits
from cloudmri_kernel.recon.model_files import load_model
from cloudmri_kernel.recon.training import evaluate, train, train_keeping_best
from cloudmri_kernel.recon.unrolled import MoDL
from tests.federated.conftest import ARCH, tiny_sites
from tests.federated.test_deployment import CLOUDMRI, SITES, _wait_for, loopback_deployment, start_deployment


@pytest.fixture
def site_models(tmp_path, monkeypatch):
    """The sites' models directory (in process, every site's is this one)."""
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "site-models"))
    return tmp_path / "site-models"


def _state(path, sha256):
    net, _ = load_model(path, expected_sha256=sha256)
    return net.state_dict()


def test_sites_fine_tune_the_final_model_keep_it_and_report_scores_before_and_after(tmp_path, catalog,
                                                                                     site_models):
    config = ExperimentConfig(name="ft", rounds=2, architecture=ARCH, min_sites=3, personalize_epochs=2)
    result = run_experiment(config, tiny_sites(), tmp_path / "global", catalog=catalog)
    personalization = result.personalization
    assert personalization.epochs == 2 and not personalization.failed
    assert set(personalization.sites) == {"site0", "site1", "site2"}
    final = _state(result.final.path, result.final.sha256)
    last_round = result.rounds[-1].evaluate
    for site, model in personalization.sites.items():
        # "before" is the final global model on the site's held-out split, as the last round scored it
        assert model.before["ssim"] == pytest.approx(last_round[site]["ssim"], abs=1e-6)
        assert model.after["ssim"] != model.before["ssim"] and 0 < model.after["ssim"] <= 1
        assert model.after["psnr"] > 0 and model.after["loss"] > 0
        # kept at the site, in its models directory, known by its hash
        assert model.path == str(personalized_path("ft", site)) == str(site_models / "personalized" / "ft"
                                                                        / f"{site}.pt")
        personal = _state(model.path, model.sha256)
        assert any(not torch.equal(personal[name], final[name]) for name in final)
    assert len({m.sha256 for m in personalization.sites.values()} | {result.final.sha256}) == 4
    _, card = load_model(personalization.sites["site1"].path)
    assert card["site"] == "site1" and card["training"]["epochs"] == 2
    assert card["held_out"]["after"]["ssim"] == pytest.approx(personalization.sites["site1"].after["ssim"])
    with catalog.session() as session:
        experiment = session.get(Experiment, result.experiment_id)
        assert experiment.status == "finished" and experiment.config["personalize_epochs"] == 2
        assert [r["round"] for r in experiment.metrics[:-1]] == [1, 2]
        stored = experiment.metrics[-1]["personalization"]
        assert stored["epochs"] == 2 and stored["failed"] == {}
        for site, model in personalization.sites.items():
            assert stored["sites"][site]["sha256"] == model.sha256
            assert stored["sites"][site]["before"]["ssim"] == pytest.approx(model.before["ssim"])
            assert stored["sites"][site]["after"]["ssim"] == pytest.approx(model.after["ssim"])
    # the global models are untouched by personalization
    assert load_model(result.final.path, expected_sha256=result.final.sha256)[1]["round"] == 2


def test_sites_keep_their_own_lamda_and_keep_the_global_denoiser_with_it(tmp_path, catalog, site_models):
    """local_lamda (FedBN applied to MoDL's data-consistency weight): each site trains and evaluates the global
    denoiser with its own λ, the global λ is the mean of the sites', and after the last round each site keeps the
    global denoiser with its λ as its model."""
    sites = tiny_sites()
    grid = InProcessGrid(site_app, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    config = ExperimentConfig(name="site-lamda", rounds=3, architecture=ARCH, min_sites=3, local_lamda=True,
                              lamda_lr=0.2)
    result = run_experiment(config, sites, tmp_path / "global", catalog=catalog, grid=grid)
    final = _state(result.final.path, result.final.sha256)
    kept = {}
    for index, site in enumerate(sites):
        own = grid.node_state(FIRST_NODE_ID + index)[SITE_LAMDA].to_torch_state_dict()["log_lamda"]
        model = result.personalization.sites[site.name]
        personal = _state(model.path, model.sha256)
        assert torch.equal(personal["log_lamda"], own)
        assert all(torch.equal(personal[name], final[name]) for name in final if name != "log_lamda")
        # no fine-tuning epochs: the kept model is the one the site scored in the last round
        assert model.after == model.before
        assert model.before["ssim"] == pytest.approx(result.rounds[-1].evaluate[site.name]["ssim"], abs=1e-6)
        kept[site.name] = float(own)
    assert len({round(value, 3) for value in kept.values()}) == 3  # sites with different data learn different λ
    assert float(final["log_lamda"]) == pytest.approx(sum(kept.values()) / 3, abs=1e-6)  # equal training counts
    assert result.personalization.epochs == 0 and not result.personalization.failed
    with catalog.session() as session:
        experiment = session.get(Experiment, result.experiment_id)
        assert experiment.status == "finished" and experiment.config["local_lamda"] is True
        assert set(experiment.metrics[-1]["personalization"]["sites"]) == {s.name for s in sites}


def test_with_site_lamda_fine_tuning_starts_from_the_sites_own_lamda(tmp_path, site_models):
    sites = tiny_sites(2)
    grid = InProcessGrid(site_app, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    config = ExperimentConfig(name="site-lamda-ft", rounds=2, architecture=ARCH, local_lamda=True, lamda_lr=0.2,
                              personalize_epochs=1)
    result = run_experiment(config, sites, tmp_path, grid=grid)
    for site in sites:
        model = result.personalization.sites[site.name]
        assert model.before["ssim"] == pytest.approx(result.rounds[-1].evaluate[site.name]["ssim"], abs=1e-6)
        assert model.after["ssim"] != model.before["ssim"]
        assert load_model(model.path)[1]["training"]["site_lamda"] is True


def _validation_site():
    from dataclasses import replace

    return replace(tiny_sites(1)[0], val_count=3)


def test_fine_tuning_with_a_validation_split_keeps_its_best_epoch():
    train_set, validation, _ = load_site_splits(_validation_site())
    torch.manual_seed(0)
    net = MoDL(ARCH)
    start = evaluate(net, validation)["ssim"]
    kept, ran, losses = train_keeping_best(net, train_set, validation, epochs=4, seed=0, lr=3e-3)
    assert len(losses) == 4 * 2 and 1 <= kept <= 4 and ran == 4  # 6 images, batch 4: two steps an epoch
    torch.manual_seed(0)
    again, state, scores = MoDL(ARCH), {}, []
    for epoch in range(1, 5):  # the same fine-tuning, epoch by epoch: what the site chose from
        train(again, train_set, epochs=1, seed=epoch, optimizer_state=state, lr=3e-3)
        scores.append(evaluate(again, validation)["ssim"])
    assert evaluate(net, validation)["ssim"] == pytest.approx(max(scores)) and max(scores) > start
    assert kept == 1 + scores.index(max(scores))


def test_fine_tuning_that_only_hurts_keeps_the_model_as_it_came():
    """A step far too large makes a trained network worse on every epoch: the site keeps what it was sent."""
    train_set, validation, _ = load_site_splits(_validation_site())
    torch.manual_seed(0)
    net = MoDL(ARCH)
    train(net, train_set, epochs=10, lr=3e-3)
    sent = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    kept, _, _ = train_keeping_best(net, train_set, validation, epochs=2, seed=0, lr=5.0)
    assert kept == 0 and all(torch.equal(net.state_dict()[name], sent[name]) for name in sent)


def test_fine_tuning_with_patience_stops_when_validation_stops_improving():
    """With patience 2, fine-tuning that only hurts stops after two epochs of a possible ten and keeps the model
    as it came; fine-tuning that helps runs until two epochs pass without a better score."""
    train_set, validation, _ = load_site_splits(_validation_site())
    torch.manual_seed(0)
    net = MoDL(ARCH)
    train(net, train_set, epochs=10, lr=3e-3)
    sent = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    hurt = train_keeping_best(net, train_set, validation, epochs=10, seed=0, lr=5.0, patience=2)
    assert (hurt.epoch, hurt.ran, len(hurt.losses)) == (0, 2, 2 * 2)
    assert all(torch.equal(net.state_dict()[name], sent[name]) for name in sent)
    torch.manual_seed(0)
    fresh, again, state, scores = MoDL(ARCH), MoDL(ARCH), {}, [0.0]
    again.load_state_dict(fresh.state_dict())
    helped = train_keeping_best(fresh, train_set, validation, epochs=12, seed=0, lr=3e-3, patience=2)
    scores[0] = evaluate(again, validation)["ssim"]
    for epoch in range(1, helped.ran + 1):  # replayed: the best so far, and where two epochs passed without better
        train(again, train_set, epochs=1, seed=epoch, optimizer_state=state, lr=3e-3)
        scores.append(evaluate(again, validation)["ssim"])
    best = max(range(len(scores)), key=scores.__getitem__)
    assert helped.epoch == best >= 1
    assert helped.ran == 12 or (helped.ran - best == 2 and max(scores[best + 1:]) <= scores[best])
    with pytest.raises(ValueError, match="patience"):
        train_keeping_best(fresh, train_set, validation, epochs=2, patience=-1)


def test_a_site_with_a_validation_split_reports_the_epoch_it_kept(tmp_path, catalog, site_models):
    sites = [_validation_site(), tiny_sites(2)[1]]
    config = ExperimentConfig(name="early", rounds=1, architecture=ARCH, personalize_epochs=3)
    result = run_experiment(config, sites, tmp_path, catalog=catalog)
    with_split, without = result.personalization.sites["site0"], result.personalization.sites["site1"]
    assert 0 <= with_split.kept_epoch <= 3 and without.kept_epoch == 3
    assert with_split.epochs_run == without.epochs_run == 3
    card = load_model(with_split.path)[1]["training"]
    assert card["kept_epoch"] == with_split.kept_epoch and card["validation_count"] == 3
    with catalog.session() as session:
        stored = session.get(Experiment, result.experiment_id).metrics[-1]["personalization"]["sites"]
        assert stored["site0"]["kept_epoch"] == with_split.kept_epoch


def test_personalize_patience_stops_each_site_on_its_own_validation_split(tmp_path, site_models):
    """A step too large only hurts: the site with a validation split stops after its patience (1 epoch of up
    to 5) and keeps the model as sent; the site without one cannot judge progress and runs all 5."""
    sites = [_validation_site(), tiny_sites(2)[1]]
    config = ExperimentConfig(name="patient", rounds=1, architecture=ARCH, lr=0.3, personalize_epochs=5,
                              personalize_patience=1)
    result = run_experiment(config, sites, tmp_path)
    with_split, without = result.personalization.sites["site0"], result.personalization.sites["site1"]
    assert (with_split.kept_epoch, with_split.epochs_run) == (0, 1)
    assert (without.kept_epoch, without.epochs_run) == (5, 5)
    assert with_split.after == with_split.before and result.personalization.patience == 1
    card = load_model(with_split.path)[1]["training"]
    assert (card["patience"], card["epochs_run"], card["kept_epoch"]) == (1, 1, 0)
    with pytest.raises(UsageError, match="personalize_patience"):
        ExperimentConfig(personalize_patience=-1)


def test_without_personalize_epochs_nothing_is_personalized(tmp_path, catalog, site_models):
    result = run_experiment(ExperimentConfig(rounds=1, architecture=ARCH), tiny_sites(2), tmp_path, catalog=catalog)
    assert result.personalization is None and not (site_models / "personalized").exists()
    with catalog.session() as session:
        assert [r["round"] for r in session.get(Experiment, result.experiment_id).metrics] == [1]


def test_a_site_that_fails_to_personalize_is_recorded_and_the_others_keep_theirs(tmp_path, catalog, site_models):
    broken = ClientApp()

    @broken.train()
    def train(msg, context):
        return site_app(msg, context)

    @broken.evaluate()
    def evaluate(msg, context):
        return site_app(msg, context)

    seen = []

    @broken.train(PERSONALIZE)
    def personalize(msg, context):
        with catalog.session() as session:  # the experiment is not finished while its sites fine-tune
            seen.append(session.scalar(select(Experiment.status).where(Experiment.name == "half")))
        raise MemoryError("out of memory while fine-tuning")

    sites = tiny_sites(2)
    grid = InProcessGrid({FIRST_NODE_ID: site_app, FIRST_NODE_ID + 1: broken},
                         {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    result = run_experiment(ExperimentConfig(name="half", rounds=1, architecture=ARCH, personalize_epochs=1),
                            sites, tmp_path, catalog=catalog, grid=grid)
    assert seen == ["personalizing"]
    assert list(result.personalization.sites) == ["site0"]
    assert result.personalization.failed == {"site1": "MemoryError: out of memory while fine-tuning"}
    assert not personalized_path("half", "site1").exists()
    with catalog.session() as session:
        experiment = session.get(Experiment, result.experiment_id)
        stored = experiment.metrics[-1]["personalization"]
        assert list(stored["sites"]) == ["site0"] and "MemoryError" in stored["failed"]["site1"]
        assert experiment.status == "finished"


def test_bad_personalization_and_server_optimizer_settings_are_refused():
    with pytest.raises(UsageError, match="personalize_epochs"):
        ExperimentConfig(personalize_epochs=-1)
    for bad in (0, -0.01):
        with pytest.raises(UsageError, match="lamda_lr"):
            ExperimentConfig(lamda_lr=bad)
    with pytest.raises(UsageError, match="server_lr"):
        ExperimentConfig(strategy="fedadam", server_lr=0)
    with pytest.raises(UsageError, match="server_momentum"):
        ExperimentConfig(strategy="fedavgm", server_momentum=1.0)
    with pytest.raises(UsageError, match="server_momentum"):
        make_strategy("fedavgm", server_momentum=-0.1)
    with pytest.raises(UsageError, match="unknown or missing"):
        experiment_from_mapping({"personalise_epochs": 2})
    for name in ("../escape", "a/b", "..", ""):
        with pytest.raises(UsageError, match="plain name"):
            personalized_path(name, "site0")
    config = experiment_from_mapping({"strategy": "fedavgm", "server_lr": 0.5, "server_momentum": 0.5,
                                      "personalize_epochs": 3, "local_lamda": True, "lamda_lr": 0.03})
    assert (config.server_lr, config.server_momentum, config.personalize_epochs) == (0.5, 0.5, 3)
    assert config.local_lamda and config.lamda_lr == 0.03 and config.personalizes


def test_server_optimizer_settings_reach_flowers_strategies():
    adam, _ = make_strategy("fedadam", server_lr=0.003)
    assert (adam.eta, adam.tau) == (0.003, 1e-3)
    momentum, _ = make_strategy("fedavgm", server_momentum=0.8)
    # effective step server_lr / (1 - momentum) is FedAvg's by default
    assert momentum.server_momentum == 0.8 and momentum.server_learning_rate == pytest.approx(0.2)


def test_fedavgm_without_momentum_and_with_step_one_is_fedavg(tmp_path):
    """The server optimizer sits on FedAvg's average: with β = 0 and step 1 it must give FedAvg's weights."""
    sites = tiny_sites(2)
    plain = run_experiment(ExperimentConfig(rounds=2, architecture=ARCH), sites, tmp_path / "fedavg")
    momentum = run_experiment(ExperimentConfig(strategy="fedavgm", server_momentum=0.0, server_lr=1.0, rounds=2,
                                               architecture=ARCH), sites, tmp_path / "fedavgm")
    assert momentum.final.sha256 == plain.final.sha256


@pytest.mark.parametrize("strategy", ["fedadam", "fedavgm"])
def test_server_optimizers_move_the_model_differently_from_fedavg(tmp_path, strategy):
    sites = tiny_sites(2)
    plain = run_experiment(ExperimentConfig(rounds=2, architecture=ARCH), sites, tmp_path / "fedavg")
    other = run_experiment(ExperimentConfig(strategy=strategy, rounds=2, architecture=ARCH), sites,
                           tmp_path / strategy)
    start = _state(plain.models[0].path, plain.models[0].sha256)
    assert other.models[0].sha256 == plain.models[0].sha256  # the same initial model
    assert other.final.sha256 != plain.final.sha256
    moved = _state(other.final.path, other.final.sha256)
    assert any(not torch.equal(moved[name], start[name]) for name in start)
    assert all(torch.isfinite(t).all() for t in moved.values())


def test_simulate_command_personalizes_from_the_yaml_and_prints_the_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "exp.yaml").write_text("""
name: local-adaptation
strategy: fedavgm
server_momentum: 0.5
rounds: 1
personalize_epochs: 2
architecture: {unrolls: 1, cg_iterations: 2, features: 8, depth: 3}
sites:
  - {name: charite, matrix: 32, calib: 8, coils: 4, train_count: 4, test_count: 2, val_count: 2}
  - {name: ruijin, matrix: 32, calib: 8, coils: 8, noise: 0.03, contrast: t2, train_count: 4, test_count: 2, seed: 1}
""")
    result = CliRunner().invoke(cli, ["fl", "simulate", str(tmp_path / "exp.yaml")])
    assert result.exit_code == 0, result.output
    assert "personalized: fine-tuning at each site for 2 epoch(s)" in result.output and "epoch kept" in result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    for site in ("charite", "ruijin"):
        path = tmp_path / "models" / "personalized" / "local-adaptation" / f"{site}.pt"
        assert path.is_file()
        _, card = load_model(path)
        assert card["sha256"][:12] in rows[site] and f" {card['training']['kept_epoch']}/2 " in rows[site]
    assert "ruijin" in rows and " 2/2 " in rows["ruijin"]  # no validation split: every epoch is kept
    catalog = Catalog.open()
    with catalog.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.config["personalize_epochs"] == 2 and experiment.config["strategy"] == "fedavgm"
        assert set(experiment.metrics[-1]["personalization"]["sites"]) == {"charite", "ruijin"}
    catalog.engine.dispose()


@pytest.mark.slow
def test_in_a_deployment_each_site_keeps_its_personalized_model_in_its_own_models_directory(tmp_path):
    """SuperLink, two `cloudmri fl site` processes with their own stores and models directories, `cloudmri fl
    run` with personalize_epochs: the aggregator's catalog has both sites' scores and hashes, and each model is
    in its own site's directory."""
    port, processes = loopback_deployment(tmp_path, dict(os.environ), lambda site: {
        **os.environ, "CLOUDMRI_MODELS_DIR": str(tmp_path / f"models-{site}")})
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'aggregator' / 'catalog.sqlite'}")

    def personalized() -> bool:
        with catalog.session() as session:
            experiment = session.scalars(select(Experiment)).one_or_none()
            return experiment is not None and "personalization" in (experiment.metrics or [{}])[-1]

    try:
        start_deployment(processes)
        (tmp_path / "exp.yaml").write_text("name: loopback-ft\nstrategy: fedavgm\nrounds: 1\nmin_sites: 2\n"
                                           "personalize_epochs: 1\n"
                                           "architecture: {unrolls: 1, cg_iterations: 2, features: 8, depth: 3}\n")
        run = subprocess.run([*CLOUDMRI, "fl", "run", str(tmp_path / "exp.yaml"), "--superlink",
                              f"127.0.0.1:{port}", "--insecure", "--out", str(tmp_path / "models")],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        _wait_for(personalized, 180, "personalization", processes)
    finally:
        for process in processes:
            process.stop()
    with catalog.session() as session:
        stored = session.scalars(select(Experiment)).one().metrics[-1]["personalization"]
    catalog.engine.dispose()
    assert set(stored["sites"]) == set(SITES) and stored["failed"] == {}
    for site, model in stored["sites"].items():
        path = tmp_path / f"models-{site}" / "personalized" / "loopback-ft" / f"{site}.pt"
        assert model["path"] == str(path) and model["after"]["ssim"] != model["before"]["ssim"]
        assert load_model(path, expected_sha256=model["sha256"])[1]["site"] == site
    assert not (tmp_path / "models" / "personalized").exists()
