"""The federated experiment widget without a browser: the sites table and its checks, a real in-process Flower
experiment (tiny sites and network) followed round by round, Stop after the first round, a site that fails and
a run that breaks; the model files, a throw-away SQLite catalog and a ledger's anchoring queue are checked
afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloudmri_widgets import FederatedExperiment
from cloudmri_widgets.federated import DEFAULT_SITES, NETWORK_SIZES, site_curves
from eth_account import Account
from sqlalchemy import func, select

from cloudmri_kernel.catalog.db import Catalog
from cloudmri_kernel.catalog.models import Experiment, Model
from cloudmri_kernel.digest import file_sha256
from cloudmri_kernel.federated.aggregation import STRATEGIES
from cloudmri_kernel.federated.experiment import validation_score
from cloudmri_kernel.federated.sites import SiteConfig
from cloudmri_kernel.ledger.client import Ledger
from cloudmri_kernel.recon.unrolled import MoDLConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    yield catalog
    catalog.engine.dispose()


@pytest.fixture
def ledger(tmp_path):
    """A site's ledger whose node is never reached: queueing a hash for anchoring is local."""
    with Ledger(tmp_path / "ledger", "http://127.0.0.1:9", Account.create()) as ledger:
        yield ledger


def tiny(form: FederatedExperiment, rounds: int = 2) -> FederatedExperiment:
    """The form set to tiny sites (32 x 32, 8 calibration lines, 4 + 2 samples) and the small network."""
    form.matrix.value, form.calib.value = 32, 8
    for row in form.site_rows:
        row.train_count.value, row.test_count.value = 4, 2
    form.rounds.value, form.network.value = rounds, "small"
    return form


def experiments(catalog) -> list[Experiment]:
    with catalog.session() as session:
        return list(session.scalars(select(Experiment)))


def test_the_form_starts_with_three_different_sites_and_refuses_bad_values(tmp_path, catalog):
    form = FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models")
    assert form.site_configs() == [SiteConfig(**site, seed=seed) for seed, site in enumerate(DEFAULT_SITES)]
    assert len({(s.coils, s.noise, s.pattern, s.contrast) for s in form.site_configs()}) == 3
    assert list(form.strategy.options) == list(STRATEGIES)
    assert form.experiment_config().architecture == MoDLConfig(**NETWORK_SIZES["small"])
    assert MoDLConfig(**NETWORK_SIZES["small"]) == MoDLConfig(unrolls=1, cg_iterations=2, features=8, depth=3)
    assert form.problems.value == ""

    form.rounds.value = 0
    assert "at least 1" in form.problems.value
    assert form.run() is None and form.status == "refused"
    assert "Nothing was started" in form.message.value and "at least 1" in form.message.value
    form.rounds.value = 2

    form.site_rows[2].name.value = "siteA"
    assert form.run() is None and form.status == "refused"
    assert "unique: siteA is used more than once" in form.message.value

    form.remove_site(form.site_rows[2])
    assert [row.name.value for row in form.site_rows] == ["siteA", "siteB"]
    form.min_sites.value = 3
    assert form.run() is None and "only 2 sites" in form.message.value
    form.min_sites.value = 1

    form.site_rows[1].coils.value = 64
    form.site_rows[1].accel.value = 99
    assert form.run() is None and "site siteB: accel must be 1 to 32" in form.message.value
    form.site_rows[1].accel.value = 2
    form.lr.value = 0
    assert form.run() is None and "learning rate" in form.message.value
    form.lr.value = 1e-3

    added = form.add_site()
    assert added.name.value == "site1" and len(form.sites_table.children) == 3
    added.remove_button.click()
    assert [row.name.value for row in form.site_rows] == ["siteA", "siteB"] and form.problems.value == ""
    assert not (tmp_path / "models").exists() and experiments(catalog) == [] and form.rounds_recorded == []


def test_a_run_shows_every_round_and_records_the_final_model(tmp_path, catalog, ledger):
    form = tiny(FederatedExperiment(catalog=catalog, ledger=ledger, out_dir=tmp_path / "models",
                                    created_by="ada"))
    form.strategy.value = "fedprox"
    figures = []
    form.figure.observe(lambda change: figures.append(change["new"]), names="value")

    result = form.run()

    assert form.status == "finished" and not form.busy and not form.start_button.disabled
    assert [r.round for r in result.rounds] == [1, 2]
    assert form.rounds_recorded == result.rounds  # the records the server made, round by round
    curves = form.curves
    assert set(curves) == {"siteA", "siteB", "siteC"}
    for site, curve in curves.items():
        assert curve["round"] == [1, 2]
        assert curve["train-loss"] == [r.train[site]["train-loss"] for r in result.rounds]
        assert curve["ssim"] == [r.evaluate[site]["ssim"] for r in result.rounds]
        assert curve["psnr"] == [r.evaluate[site]["psnr"] for r in result.rounds]
        assert all(0 < ssim <= 1 for ssim in curve["ssim"])
    assert len([f for f in figures if bytes(f).startswith(PNG)]) == 2  # redrawn after each round
    assert form.progress.value == form.progress.max == 2
    for site in ("siteA", "siteB", "siteC"):
        assert f"<td>{site}</td><td>trained</td>" in form.latest.value
    assert f"{result.rounds[-1].evaluate['siteB']['ssim']:.4f}" in form.latest.value
    assert form.participants.value == ""

    assert form.final_path == str(tmp_path / "models" / "round-2.pt")
    assert form.final_sha256 == file_sha256(form.final_path) == result.final.sha256
    assert form.experiment_id == result.experiment_id
    with catalog.session() as session:
        experiment = session.get(Experiment, form.experiment_id)
        assert experiment.status == "finished" and experiment.created_by == "ada"
        assert experiment.config["strategy"] == "fedprox" and experiment.config["rounds"] == 2
        assert [s["matrix"] for s in experiment.config["sites"]] == [32, 32, 32]
        assert [r["round"] for r in experiment.metrics] == [1, 2]
        assert session.scalar(select(Model.round).where(Model.sha256 == form.final_sha256)) == 2
    assert [r.kind for r in ledger.queue.find(form.final_sha256)] == ["model"]
    assert form.final_sha256 in form.message.value and form.experiment_id in form.message.value
    assert "queued for anchoring" in form.message.value


def test_personalization_shows_each_sites_scores_before_and_after(tmp_path, catalog, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "site-models"))
    form = tiny(FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models"), rounds=1)
    form.name.value = "with-ft"
    form.personalize_epochs.value = 1

    result = form.run()

    step = result.personalization
    assert form.status == "finished" and step.epochs == 1 and sorted(step.sites) == ["siteA", "siteB", "siteC"]
    for site, model in step.sites.items():
        assert f"<td>{site}</td><td>{model.before['ssim']:.3f}</td><td>{model.after['ssim']:.3f}</td>" \
            in form.message.value
        assert Path(model.path).is_file() and file_sha256(model.path) == model.sha256
    assert "Personalized (1 epochs at each site, kept there)" in form.message.value
    with catalog.session() as session:
        assert session.get(Experiment, form.experiment_id).config["personalize_epochs"] == 1


def test_a_site_with_validation_images_stops_fine_tuning_after_the_patience(tmp_path, catalog, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "site-models"))
    form = tiny(FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models"), rounds=1)
    form.name.value, form.lr.value = "patient", 0.03  # at this step siteA's first fine-tuning epoch hurts
    form.personalize_epochs.value, form.personalize_patience.value = 3, -1
    assert "personalize_patience" in form.problems.value
    form.personalize_patience.value = 1
    form.site_rows[0].val_count.value = 2
    assert form.problems.value == ""

    step = form.run().personalization

    assert step.patience == 1 and {name: model.epochs_run for name, model in step.sites.items()} == \
        {"siteA": 1, "siteB": 3, "siteC": 3}
    first = step.sites["siteA"]
    assert (first.kept_epoch, first.after) == (0, first.before)
    assert f"<td>{first.after['ssim']:.3f}</td><td>0/1</td>" in form.message.value
    assert "Personalized (up to 3 epochs at each site, stopping 1 after its best, kept there)" in form.message.value
    with catalog.session() as session:
        config = session.get(Experiment, form.experiment_id).config
        assert config["personalize_patience"] == 1 and [s["val_count"] for s in config["sites"]] == [2, 0, 0]


def test_a_round_patience_stops_the_rounds_and_links_the_best_rounds_model(tmp_path, catalog):
    form = tiny(FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models"), rounds=8)
    form.name.value, form.lr.value = "patient-rounds", 0.5  # at this step the sites' validation SSIM peaks at round 4
    form.rounds_patience.value = -1
    assert "rounds_patience" in form.problems.value
    form.rounds_patience.value = 2
    assert "validation images" in form.problems.value
    for row in form.site_rows:
        row.val_count.value = 2
    assert form.problems.value == ""

    result = form.run()

    assert (len(result.rounds), result.kept_round) == (6, 4)
    assert form.final_path == str(tmp_path / "models" / "round-4.pt") == str(result.kept.path)
    assert form.final_sha256 == file_sha256(form.final_path)
    score = validation_score(result.rounds[3])
    assert (f"Finished 6 of 8 rounds (2 without a better validation score) in {result.seconds:.0f} s. Kept round 4: "
            f"the best mean validation SSIM of the sites ({score:.3f})") in form.message.value
    with catalog.session() as session:
        experiment = session.get(Experiment, form.experiment_id)
        assert experiment.config["rounds_patience"] == 2 and experiment.metrics[-1]["kept"]["round"] == 4


def test_site_lamda_keeps_each_sites_model_with_its_own_lamda(tmp_path, catalog, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path / "site-models"))
    form = tiny(FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models"), rounds=1)
    form.name.value = "site-lamda"
    form.local_lamda.value = True

    result = form.run()

    step = result.personalization
    assert form.status == "finished" and step.epochs == 0 and sorted(step.sites) == ["siteA", "siteB", "siteC"]
    assert "Each site's model (the global denoiser with the site's own λ, kept there)" in form.message.value
    for site, model in step.sites.items():
        assert f"<td>{site}</td><td>{model.before['ssim']:.3f}</td><td>{model.after['ssim']:.3f}</td>" \
            in form.message.value
        assert file_sha256(model.path) == model.sha256
    with catalog.session() as session:
        assert session.get(Experiment, form.experiment_id).config["local_lamda"] is True


def test_stop_after_the_first_round_keeps_that_round(tmp_path, catalog):
    form = tiny(FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models"), rounds=3)
    while_running = []

    def press_stop(change):
        if change["new"] == 1:
            while_running.append((form.busy, form.start_button.disabled, form.stop_button.disabled))
            form.stop_button.click()

    form.observe(press_stop, names="rounds_done")
    form.start_button.click()
    form.wait(120)

    assert while_running == [(True, True, False)]
    assert form.status == "stopped" and form.result.stopped and form.start_button.disabled is False
    assert [r.round for r in form.rounds_recorded] == [1] and list(form.curves["siteA"]["round"]) == [1]
    assert "Stopped after round 1 of 3" in form.message.value
    assert form.final_path == str(tmp_path / "models" / "round-1.pt")
    assert form.final_sha256 == file_sha256(form.final_path)
    assert not (tmp_path / "models" / "round-2.pt").exists()
    (experiment,) = experiments(catalog)
    assert experiment.id == form.experiment_id and experiment.status == "stopped"
    assert [r["round"] for r in experiment.metrics] == [1]


def test_a_failing_site_is_named_with_its_reason_and_a_broken_run_is_reported(tmp_path, catalog):
    form = tiny(FederatedExperiment(catalog=catalog, out_dir=tmp_path / "models"), rounds=1)
    form.site_rows[2].noise.value = 1e39  # overflows the site's k-space: its coil-map estimate fails

    result = form.run()

    (record,) = result.rounds
    assert record.trained == ["siteA", "siteB"] and list(record.failed) == ["siteC"]
    assert "<td>siteC</td><td>failed</td>" in form.latest.value
    assert "siteC failed: _LinAlgError" in form.participants.value
    assert site_curves(result.rounds).keys() == {"siteA", "siteB"}

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the models should go")
    broken = tiny(FederatedExperiment(catalog=catalog, out_dir=blocked), rounds=1)
    assert broken.run() is None and broken.status == "failed" and not broken.busy
    assert "The experiment failed (0 of 1 rounds done)" in broken.message.value
    assert "FileExistsError" in broken.message.value
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Experiment).where(Experiment.status == "failed")) == 1
