"""Early stopping over rounds (``rounds_patience``): the rounds stop once that many pass without a better mean
validation SSIM of the sites, the best round's global model is kept, offered and personalized, and the catalog
records which round it was."""

import logging
from dataclasses import replace

import pytest
import torch
from sqlalchemy import func, select
from typer.testing import CliRunner

from cloudmri_kernel.catalog.db import Catalog
from cloudmri_kernel.catalog.models import Experiment, Model
from cloudmri_kernel.cli import app as cli
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated.experiment import FIRST_NODE_ID, ExperimentConfig, run_experiment, validation_score
from cloudmri_kernel.federated.simulation import InProcessGrid
from cloudmri_kernel.federated.site import app as site_app
from cloudmri_kernel.recon.model_files import load_model
from tests.federated.conftest import ARCH, tiny_sites

#: At this step the tiny sites' mean validation SSIM peaks at round 4 of 10 and is no better at rounds 5 and 6.
LR = 0.3


def validated_sites():
    return [replace(site, val_count=3) for site in tiny_sites()]


def _weights(model):
    return load_model(model.path, expected_sha256=model.sha256)[0].state_dict()


def test_rounds_stop_once_the_patience_passes_without_a_better_validation_score(tmp_path, catalog):
    config = ExperimentConfig(name="early", rounds=10, rounds_patience=2, lr=LR, architecture=ARCH, min_sites=3)
    result = run_experiment(config, validated_sites(), tmp_path / "early", catalog=catalog)
    ran = len(result.rounds)
    replay = run_experiment(replace(config, rounds=ran, rounds_patience=0), validated_sites(), tmp_path / "all")
    scores = [sum(site["val-ssim"] for site in r.evaluate.values()) / 3 for r in replay.rounds]
    best = 1 + scores.index(max(scores))

    assert [validation_score(r) for r in result.rounds] == pytest.approx(scores, abs=1e-6)
    assert ran < 10 and result.kept_round == best == ran - 2 and max(scores[best:]) <= scores[best - 1]
    assert result.kept == result.models[best] and result.final == result.models[ran] and replay.kept_round is None
    kept, replayed = _weights(result.kept), _weights(replay.models[best])
    assert all(torch.allclose(kept[name], replayed[name], atol=1e-5) for name in kept)  # float sums' order aside
    with catalog.session() as session:
        experiment = session.get(Experiment, result.experiment_id)
        assert experiment.status == "finished" and experiment.config["rounds_patience"] == 2
        assert [r["round"] for r in experiment.metrics[:-1]] == list(range(1, ran + 1))
        assert experiment.metrics[-1]["kept"] == {"round": best, "rounds_run": ran, "patience": 2,
                                                  "validation_ssim": pytest.approx(scores[best - 1])}
        assert session.scalar(select(func.count()).select_from(Model)) == ran + 1  # rounds 0..ran


def test_sites_personalize_the_kept_round_not_the_last(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "site-models"))
    config = ExperimentConfig(name="kept-ft", rounds=10, rounds_patience=2, lr=LR, architecture=ARCH, min_sites=3,
                              personalize_epochs=1)
    result = run_experiment(config, validated_sites(), tmp_path)
    kept, last = result.rounds[result.kept_round - 1], result.rounds[-1]
    assert result.kept_round < len(result.rounds)
    for site, model in result.personalization.sites.items():
        assert model.before["ssim"] == pytest.approx(kept.evaluate[site]["ssim"], abs=1e-6)
        assert model.before["ssim"] != pytest.approx(last.evaluate[site]["ssim"], abs=1e-6)


def test_a_ceiling_reached_still_keeps_the_best_round(tmp_path):
    config = ExperimentConfig(rounds=3, rounds_patience=5, lr=0.1, architecture=ARCH, min_sites=3)
    result = run_experiment(config, validated_sites(), tmp_path)
    scores = [validation_score(r) for r in result.rounds]
    assert len(result.rounds) == 3 and result.kept_round == 1 + scores.index(max(scores))


def test_rounds_patience_needs_validation_splits_and_is_not_negative(tmp_path, caplog):
    with pytest.raises(UsageError, match="rounds_patience must be 0"):
        ExperimentConfig(rounds_patience=-1)
    with pytest.raises(UsageError, match="val_count"):
        run_experiment(ExperimentConfig(rounds_patience=1, architecture=ARCH), tiny_sites(), tmp_path)
    assert not list(tmp_path.iterdir())
    # a deployment's aggregator cannot see the sites' splits: without validation scores every round runs
    sites = tiny_sites(2)
    grid = InProcessGrid(site_app, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    with caplog.at_level(logging.WARNING):
        result = run_experiment(ExperimentConfig(rounds=2, rounds_patience=1, architecture=ARCH), [], tmp_path,
                                grid=grid)
    assert len(result.rounds) == 2 and result.kept_round is None and result.kept == result.final
    assert "no site reported a validation score" in caplog.text


def test_simulate_command_says_which_round_it_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "models"))
    sites = "\n".join(f"  - {{name: {s.name}, matrix: 32, calib: 8, coils: {s.coils}, noise: {s.noise}, "
                      f"contrast: {s.contrast}, accel: {s.accel}, pattern: {s.pattern}, train_count: 6, "
                      f"test_count: 3, val_count: 3, seed: {s.seed}}}" for s in tiny_sites())
    (tmp_path / "exp.yaml").write_text(f"""
name: patient-rounds
rounds: 10
rounds_patience: 2
lr: {LR}
min_sites: 3
architecture: {{unrolls: 1, cg_iterations: 3, features: 8, depth: 3}}
sites:
{sites}
""")
    result = CliRunner().invoke(cli, ["fl", "simulate", str(tmp_path / "exp.yaml")])
    assert result.exit_code == 0, result.output
    catalog = Catalog.open()
    with catalog.session() as session:
        kept = session.scalars(select(Experiment)).one().metrics[-1]["kept"]
    catalog.engine.dispose()
    assert "val. SSIM" in result.output  # the scores the round was chosen on, beside the held-out ones
    said = "".join(result.output.split())  # the console wraps at 80 columns
    kept_model = tmp_path / "models" / "patient-rounds" / f"round-{kept['round']}.pt"
    assert "".join(f"kept round {kept['round']}: the sites' best mean validation SSIM ({kept['validation_ssim']:.4f}); "
                   f"stopped after round {kept['rounds_run']} of up to 10, 2 without a better one".split()) in said
    assert f"model{kept_model}sha256" in said
