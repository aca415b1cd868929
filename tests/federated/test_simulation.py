"""Federated training in one process: Flower's strategies and ClientApp, sites with their own data, the catalog
record, and the faults a real consortium meets (a site that fails, one that sends NaN or absurd weights)."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message
from flwr.clientapp import ClientApp
from sqlalchemy import select

from cloudmri_kernel.catalog.models import Experiment, Model
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated.experiment import FIRST_NODE_ID, ExperimentConfig, run_experiment
from cloudmri_kernel.federated.simulation import InProcessGrid
from cloudmri_kernel.federated.site import OPTIMIZER_STATE
from cloudmri_kernel.federated.site import app as site_app
from cloudmri_kernel.federated.sites import SiteConfig
from cloudmri_kernel.recon.model_files import load_model
from tests.federated.conftest import ARCH, tiny_sites


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedavgm", "trimmed-mean", "krum"])
def test_every_strategy_runs_rounds_and_records_them(tmp_path, catalog, strategy):
    config = ExperimentConfig(name=f"exp-{strategy}", strategy=strategy, rounds=2, architecture=ARCH,
                              min_sites=2)
    result = run_experiment(config, tiny_sites(), tmp_path / "models", catalog=catalog, created_by="ada")
    assert [r.trained for r in result.rounds] == [["site0", "site1", "site2"]] * 2
    assert all(set(r.evaluate) == {"site0", "site1", "site2"} for r in result.rounds)
    for r in result.rounds:
        for metrics in r.evaluate.values():
            assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 0 and metrics["num-examples"] == 3
        assert all(m["num-examples"] == 6 and m["train-loss"] > 0 for m in r.train.values())
    assert [m.round for m in result.models] == [0, 1, 2]
    net, card = load_model(result.final.path, expected_sha256=result.final.sha256)
    assert card["round"] == 2 and card["strategy"] == strategy
    with catalog.session() as session:
        experiment = session.get(Experiment, result.experiment_id)
        assert experiment.status == "finished" and experiment.created_by == "ada"
        assert experiment.sites == ["site0", "site1", "site2"]
        assert experiment.config["strategy"] == strategy and len(experiment.config["sites"]) == 3
        assert [r["round"] for r in experiment.metrics] == [1, 2]
        models = session.scalars(select(Model).where(Model.experiment_id == result.experiment_id)
                                 .order_by(Model.round)).all()
        assert [m.round for m in models] == [0, 1, 2]
        assert models[-1].sha256 == result.final.sha256
        assert set(models[-1].metrics["evaluate"]) == {"site0", "site1", "site2"}


def test_fedavg_weights_are_the_example_weighted_mean_of_the_sites(tmp_path):
    """One round of FedAvg by hand: the global model equals sum(n_i w_i) / sum(n_i) of what the sites sent."""
    sites = [SiteConfig("a", matrix=32, calib=8, coils=4, train_count=4, test_count=1, seed=0),
             SiteConfig("b", matrix=32, calib=8, coils=4, train_count=8, test_count=1, seed=1)]
    sent = {}

    recorder = ClientApp()

    @recorder.train()
    def train(msg, context):
        reply = site_app(msg, context)
        sent[context.node_config["name"]] = reply.content["arrays"].to_torch_state_dict()
        return reply

    @recorder.evaluate()
    def evaluate(msg, context):
        return site_app(msg, context)

    grid = InProcessGrid(recorder, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    result = run_experiment(ExperimentConfig(rounds=1, architecture=ARCH), sites, tmp_path, grid=grid)
    net, _ = load_model(result.final.path)
    for name, tensor in net.state_dict().items():
        expected = (4 * sent["a"][name] + 8 * sent["b"][name]) / 12
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)


def _faulty(kind: str) -> ClientApp:
    """A site that fails during training, or sends NaN, or absurdly large weights (a broken or hostile site)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context):
        if kind == "drop":
            raise ConnectionError("site went offline mid-round")
        reply = site_app(msg, context)
        state = reply.content["arrays"].to_torch_state_dict()
        first = next(iter(state))
        state[first] = torch.full_like(state[first], float("nan")) if kind == "nan" else state[first] * 1e6
        reply.content["arrays"] = ArrayRecord(state)
        return reply

    @app.evaluate()
    def evaluate(msg, context):
        if kind == "drop":
            raise ConnectionError("site went offline mid-round")
        return site_app(msg, context)

    return app


@pytest.mark.parametrize("keep", [True, False])
def test_sites_keep_their_adam_moments_between_rounds_and_to_themselves(tmp_path, keep):
    """With keep_optimizer_state each site's Adam state lives on in its own context (2 rounds x 2 steps = step 4);
    what the site sends is the model's weights only. Without it nothing is kept."""
    sites = tiny_sites(2)
    sent = []
    recorder = ClientApp()

    @recorder.train()
    def train(msg, context):
        reply = site_app(msg, context)
        sent.append(set(reply.content["arrays"].to_torch_state_dict()))
        return reply

    @recorder.evaluate()
    def evaluate(msg, context):
        return site_app(msg, context)

    grid = InProcessGrid(recorder, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    result = run_experiment(ExperimentConfig(rounds=2, architecture=ARCH, keep_optimizer_state=keep), sites,
                            tmp_path, grid=grid)
    weights = set(load_model(result.final.path)[0].state_dict())
    assert sent == [weights] * 4
    for node in (FIRST_NODE_ID, FIRST_NODE_ID + 1):
        state = grid.node_state(node)
        if not keep:
            assert OPTIMIZER_STATE not in state
            continue
        kept = state[OPTIMIZER_STATE].to_torch_state_dict()
        parameters = list(load_model(result.final.path)[0].parameters())
        assert {k for k in kept if k.endswith(".step")} == {f"{i}.step" for i in range(len(parameters))}
        assert all(kept[f"{i}.step"].item() == 4 for i in range(len(parameters)))  # 6 images / batch 4: 2 per round
        assert all(kept[f"{i}.exp_avg_sq"].shape == p.shape and kept[f"{i}.exp_avg_sq"].abs().sum() > 0
                   for i, p in enumerate(parameters))


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam", "fedavgm"])
@pytest.mark.parametrize(("kind", "reason"), [("drop", None), ("nan", "NaN"), ("absurd", "absurd")])
def test_a_failing_or_bad_site_is_left_out_and_the_round_completes(tmp_path, catalog, kind, reason, strategy):
    sites = tiny_sites()
    apps = {FIRST_NODE_ID: site_app, FIRST_NODE_ID + 1: site_app, FIRST_NODE_ID + 2: _faulty(kind)}
    grid = InProcessGrid(apps, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    result = run_experiment(ExperimentConfig(strategy=strategy, rounds=1, architecture=ARCH, min_sites=2), sites,
                            tmp_path, catalog=catalog, grid=grid)
    (record,) = result.rounds
    assert record.complete and record.trained == ["site0", "site1"]
    if kind == "drop":
        assert record.failed == {"site2": "ConnectionError: site went offline mid-round"} and not record.rejected
    else:
        assert list(record.rejected) == ["site2"] and reason in record.rejected["site2"]
    net, _ = load_model(result.final.path)
    assert all(torch.isfinite(t).all() and t.abs().max() < 1e3 for t in net.state_dict().values())
    with catalog.session() as session:
        stored = session.get(Experiment, result.experiment_id).metrics[0]
        assert stored["trained"] == ["site0", "site1"]
        assert stored["failed"] == record.failed and stored["rejected"] == record.rejected


def test_too_few_sites_keeps_the_global_model_and_says_so(tmp_path):
    sites = tiny_sites(2)
    apps = {FIRST_NODE_ID: site_app, FIRST_NODE_ID + 1: _faulty("nan")}
    grid = InProcessGrid(apps, {FIRST_NODE_ID + i: s.to_node_config() for i, s in enumerate(sites)})
    result = run_experiment(ExperimentConfig(rounds=1, architecture=ARCH, min_sites=2), sites, tmp_path, grid=grid)
    assert not result.rounds[0].complete
    assert result.models[1].sha256 == result.models[0].sha256
    start, _ = load_model(result.models[0].path)
    end, _ = load_model(result.models[1].path)
    for name, tensor in start.state_dict().items():
        torch.testing.assert_close(end.state_dict()[name], tensor)


def test_bad_experiment_and_site_settings_are_refused(tmp_path):
    with pytest.raises(UsageError, match="strategy"):
        ExperimentConfig(strategy="fedsgd")
    with pytest.raises(UsageError, match="at least 1"):
        ExperimentConfig(rounds=0)
    with pytest.raises(UsageError, match="unique"):
        run_experiment(ExperimentConfig(rounds=1, architecture=ARCH), [tiny_sites(1)[0]] * 2, tmp_path)
    with pytest.raises(UsageError, match="data_dir"):
        SiteConfig("x", source="store")
    with pytest.raises(UsageError, match="unknown site settings"):
        SiteConfig.from_node_config({"name": "x", "colour": "red"})
    with pytest.raises(UsageError, match="contrast"):
        SiteConfig("x", contrast="flair")
    with pytest.raises(UsageError, match="val_count"):
        SiteConfig("x", val_count=-1)


def test_sites_keep_their_own_data_apart():
    """Different sites, different data: no sample of one site appears at another."""
    from cloudmri_kernel.federated.sites import load_site_data

    a, b = (load_site_data(s) for s in tiny_sites(2))
    assert a[0][0].kspace.shape[0] == 4 and b[0][0].kspace.shape[0] == 8
    assert not np.allclose(np.abs(a[1][0].target), np.abs(b[1][0].target))


def test_a_validation_split_is_set_aside_without_changing_the_other_splits():
    from dataclasses import replace

    from cloudmri_kernel.federated.sites import load_site_data, load_site_splits

    site = tiny_sites(1)[0]
    train_set, validation, test_set = load_site_splits(replace(site, val_count=2))
    before_train, before_test = load_site_data(site)
    assert len(validation) == 2 and load_site_splits(site)[1] == []
    assert [s.kspace.tobytes() for s in train_set] == [s.kspace.tobytes() for s in before_train]
    assert [s.kspace.tobytes() for s in test_set] == [s.kspace.tobytes() for s in before_test]
    seen = {s.kspace.tobytes() for s in train_set + test_set}
    assert all(s.kspace.tobytes() not in seen for s in validation)


def test_sites_with_a_validation_split_report_its_scores_every_round(tmp_path):
    from dataclasses import replace

    sites = [replace(tiny_sites(1)[0], val_count=2), tiny_sites(2)[1]]
    result = run_experiment(ExperimentConfig(rounds=1, architecture=ARCH), sites, tmp_path)
    scores = result.rounds[0].evaluate
    assert {"val-ssim", "val-psnr", "val-loss", "ssim"} <= set(scores["site0"])
    assert 0 < scores["site0"]["val-ssim"] <= 1 and scores["site0"]["val-ssim"] != scores["site0"]["ssim"]
    assert not any(key.startswith("val-") for key in scores["site1"])


def test_a_store_site_trains_on_the_fully_sampled_raw_files_of_its_own_store(tmp_path):
    """Retrospective undersampling of the site's decrypted raw files; undersampled files are skipped."""
    from cloudmri_kernel.crypto import KeyRing
    from cloudmri_kernel.federated.sites import load_site_data
    from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
    from cloudmri_kernel.store.objects import ObjectStore

    store = ObjectStore(tmp_path / "store", KeyRing(tmp_path / "keys" / "kek"))
    full = write_phantom(tmp_path / "full.h5", PhantomSpec(matrix=32, coils=4, slices=4, noise=0.0))
    accelerated = write_phantom(tmp_path / "r4.h5", PhantomSpec(matrix=32, coils=4, slices=4, accel=4, calib=8))
    store.put(full, site="charite")
    store.put(accelerated, site="charite")
    store.put(full, site="ruijin")
    train_set, test_set = load_site_data(SiteConfig("charite", source="store", data_dir=str(tmp_path), calib=8,
                                                    accel=4, test_count=1))
    assert len(train_set) + len(test_set) == 4 and len(test_set) == 1
    from cloudmri_kernel.federated.sites import load_site_splits

    split = load_site_splits(SiteConfig("charite", source="store", data_dir=str(tmp_path), calib=8, accel=4,
                                        test_count=1, val_count=1))
    assert [len(part) for part in split] == [2, 1, 1]
    sample = train_set[0]
    assert sample.kspace.shape == (4, 32, 32) and sample.mask.sum() < 32
    assert np.abs(sample.kspace[:, ~sample.mask]).max() == 0
    with pytest.raises(UsageError, match="no fully sampled"):
        load_site_data(SiteConfig("nowhere", source="store", data_dir=str(tmp_path)))


def test_rdp_epsilon_matches_the_closed_form_minimum():
    """ε = min_α T·α/(2z²) + ln(1/δ)/(α−1); at the continuous optimum it is a + 2√(a·ln(1/δ)), a = T/(2z²)."""
    from cloudmri_kernel.federated.aggregation import gaussian_epsilon

    for rounds, z, delta in ((1, 1.0, 1e-5), (10, 2.0, 1e-5), (50, 5.0, 1e-6)):
        a, log_term = rounds / (2 * z * z), np.log(1 / delta)
        assert gaussian_epsilon([z] * rounds, delta) == pytest.approx(a + 2 * np.sqrt(a * log_term), rel=0.01)
    assert gaussian_epsilon([], 1e-5) == 0


def test_differential_privacy_clips_adds_noise_and_reports_the_budget(tmp_path, catalog):
    from cloudmri_kernel.federated.aggregation import gaussian_epsilon

    sites = tiny_sites(2)
    plain = run_experiment(ExperimentConfig(rounds=2, architecture=ARCH), sites, tmp_path / "plain")
    private = run_experiment(ExperimentConfig(rounds=2, architecture=ARCH, dp_noise_multiplier=2.0,
                                              dp_clipping_norm=0.5, dp_delta=1e-5),
                             sites, tmp_path / "private", catalog=catalog)
    assert all(r.epsilon is None for r in plain.rounds)
    # equal site sizes: the effective multiplier is the configured one
    assert [r.epsilon for r in private.rounds] == pytest.approx([gaussian_epsilon([2.0] * n, 1e-5) for n in (1, 2)])
    assert private.rounds[1].epsilon > private.rounds[0].epsilon > 0
    assert private.final.sha256 != plain.final.sha256
    with catalog.session() as session:
        stored = session.get(Experiment, private.experiment_id)
        assert stored.metrics[1]["epsilon"] == pytest.approx(private.rounds[1].epsilon)
        assert stored.config["dp_noise_multiplier"] == 2.0
    with pytest.raises(UsageError, match="differential privacy"):
        run_experiment(ExperimentConfig(rounds=1, architecture=ARCH, dp_noise_multiplier=1.0, dp_clipping_norm=0),
                       sites, tmp_path / "bad")
