"""The unrolled network, its training, model files with hash checks, and `cloudmri recon --method dl`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.recon import model_files
from cloudmri_kernel.recon.engine import reconstruct_file
from cloudmri_kernel.recon.model_files import load_model, save_model
from cloudmri_kernel.recon.recipe import parse_recipe
from cloudmri_kernel.recon.synthetic import SyntheticSpec, centred_fft2, centred_ifft2, synthetic_dataset
from cloudmri_kernel.recon.training import evaluate, train, train_keeping_best, zero_filled_metrics
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig

SMALL = MoDLConfig(unrolls=2, cg_iterations=4, features=8, depth=3)


def test_synthetic_samples_are_consistent_with_their_physics():
    spec = SyntheticSpec(matrix=32, coils=4, accel=4, calib=8, noise=0.0)
    (sample,) = synthetic_dataset(spec, 1, seed=3)
    assert np.abs(sample.target).max() == pytest.approx(1.0)
    assert sample.mask[16 - 4:16 + 4].all() and 8 <= sample.mask.sum() < 32
    np.testing.assert_array_equal(np.abs(sample.kspace[:, ~sample.mask]).max(), 0)
    np.testing.assert_allclose(centred_ifft2(centred_fft2(sample.target)), sample.target, atol=1e-5)
    again = synthetic_dataset(spec, 1, seed=3)[0]
    np.testing.assert_array_equal(again.kspace, sample.kspace)


@pytest.mark.parametrize("bad", [{"matrix": 15}, {"coils": 0}, {"accel": 0}, {"pattern": "spiral"},
                                 {"contrast": "pd"}, {"noise": -1}])
def test_bad_synthetic_specs_are_refused(bad):
    with pytest.raises(UsageError):
        SyntheticSpec(**bad)


def test_with_full_sampling_and_no_noise_the_data_consistency_returns_the_object():
    """A huge data-consistency weight on fully sampled data makes the output the SENSE solution: the object."""
    spec = SyntheticSpec(matrix=32, coils=4, accel=1, calib=32, noise=0.0)
    samples = synthetic_dataset(spec, 2, seed=0)
    net = MoDL(MoDLConfig(unrolls=1, cg_iterations=10, features=8, depth=3, lamda=1e-6))
    with torch.no_grad():
        out = net(*(torch.from_numpy(np.stack([getattr(s, k) for s in samples])) for k in ("kspace", "mask", "maps")))
    truth = np.abs(np.stack([s.target for s in samples]))
    inside = truth > 0.1
    np.testing.assert_allclose(np.abs(out.numpy())[inside], truth[inside], atol=0.02)


def test_training_lowers_the_loss_and_beats_zero_filling():
    spec = SyntheticSpec(matrix=32, coils=4, accel=3, calib=8)
    train_set, test_set = synthetic_dataset(spec, 24, 0), synthetic_dataset(spec, 6, 99)
    torch.manual_seed(0)
    net = MoDL(SMALL)
    before = evaluate(net, test_set)
    losses = train(net, train_set, epochs=4, batch_size=4, lr=3e-3)
    after = evaluate(net, test_set)
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    assert after["loss"] < before["loss"]
    assert after["psnr"] > zero_filled_metrics(test_set)["psnr"]


def test_fedprox_term_keeps_the_weights_near_the_global_ones():
    spec = SyntheticSpec(matrix=32, coils=4, accel=3, calib=8)
    data = synthetic_dataset(spec, 8, 0)
    torch.manual_seed(0)
    start = MoDL(SMALL).state_dict()
    drift = {}
    for mu in (0.0, 100.0):
        net = MoDL(SMALL)
        net.load_state_dict(start)
        train(net, data, epochs=2, lr=1e-2, proximal_mu=mu, global_state=start)
        drift[mu] = sum(float(((net.state_dict()[k] - start[k]) ** 2).sum()) for k in start)
    assert drift[100.0] < 0.5 * drift[0.0]
    with pytest.raises(ValueError, match="global"):
        train(MoDL(SMALL), data, proximal_mu=1.0)


def test_lamda_takes_its_own_adam_step():
    """Adam's first step moves every parameter by its learning rate: λ's log by lamda_lr, the denoiser by lr."""
    data = synthetic_dataset(SyntheticSpec(matrix=32, coils=4, accel=3, calib=8), 4, 0)
    torch.manual_seed(0)
    start = MoDL(SMALL).state_dict()
    moved = {}
    for lamda_lr in (None, 0.1):
        net = MoDL(SMALL)
        net.load_state_dict(start)
        state: dict = {}
        train(net, data, epochs=1, batch_size=4, lr=1e-3, lamda_lr=lamda_lr, optimizer_state=state)
        after = net.state_dict()
        moved[lamda_lr] = abs(float(after["log_lamda"] - start["log_lamda"]))
        denoiser = max(float((after[k] - start[k]).abs().max()) for k in start if k != "log_lamda")
        assert denoiser == pytest.approx(1e-3, rel=1e-3)
        assert state[0]["exp_avg"].shape == start["log_lamda"].shape  # λ stays parameter 0 of the kept state
    assert moved[None] == pytest.approx(1e-3, rel=1e-3) and moved[0.1] == pytest.approx(0.1, rel=1e-3)


def test_training_keeps_the_checkpoint_best_on_validation_images():
    spec = SyntheticSpec(matrix=32, coils=4, accel=3, calib=8)
    data, validation = synthetic_dataset(spec, 8, 0), synthetic_dataset(spec, 3, 7)
    torch.manual_seed(0)
    start = MoDL(SMALL).state_dict()
    net = MoDL(SMALL)
    net.load_state_dict(start)
    kept, _, losses = train_keeping_best(net, data, validation, epochs=6, every=2, seed=0, lr=3e-3)
    assert kept in (0, 2, 4, 6) and len(losses) == 6 * 2
    again, state, scores = MoDL(SMALL), {}, {}
    again.load_state_dict(start)
    scores[0] = evaluate(again, validation)["ssim"]
    for epoch in (2, 4, 6):  # the checkpoints it chose from, replayed
        train(again, data, epochs=2, seed=epoch, optimizer_state=state, lr=3e-3)
        scores[epoch] = evaluate(again, validation)["ssim"]
    assert kept == max(scores, key=scores.get)
    assert evaluate(net, validation)["ssim"] == pytest.approx(scores[kept])


def test_a_model_file_roundtrips_and_a_changed_file_is_refused(tmp_path):
    torch.manual_seed(1)
    net = MoDL(SMALL)
    card = save_model(net, tmp_path / "m.pt", {"note": "test"})
    assert json.loads((tmp_path / "m.json").read_text())["sha256"] == card["sha256"]
    loaded, loaded_card = load_model(tmp_path / "m.pt")
    assert loaded.config == SMALL and loaded_card["note"] == "test"
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    with pytest.raises(InvalidDataError, match="does not match the record"):
        load_model(tmp_path / "m.pt", expected_sha256="0" * 64)
    data = bytearray((tmp_path / "m.pt").read_bytes())
    data[-100] ^= 1
    (tmp_path / "m.pt").write_bytes(bytes(data))
    with pytest.raises(InvalidDataError, match="does not match its card"):
        load_model(tmp_path / "m.pt")
    with pytest.raises(UsageError, match="no model"):
        load_model("no-such-model")
    (tmp_path / "n.pt").write_bytes(b"x")
    with pytest.raises(InvalidDataError, match="no card"):
        load_model(tmp_path / "n.pt")


def test_the_shipped_model_reconstructs_a_phantom_better_than_zero_filling(tmp_path):
    """`--method dl` on an accelerated phantom through the engine: the shipped model's hash is checked at load."""
    path = write_phantom(tmp_path / "ph.h5", PhantomSpec(matrix=64, coils=8, accel=3, calib=12, pattern="poisson",
                                                         noise=0.01))
    dl = reconstruct_file(path, parse_recipe({"method": "dl"}))
    zero = reconstruct_file(path, parse_recipe({"method": "ifft"}))
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.quality.metrics import nrmse

    with MRDFile(path) as mrd:
        truth = np.abs(mrd.read_array("phantom")).reshape(1, 64, 64)
    assert dl.recipe.method == "dl" and dl.images.shape[-2:] == (64, 64)
    errors = {name: nrmse(truth, result.images.reshape(truth.shape)) for name, result in (("dl", dl), ("ifft", zero))}
    assert errors["dl"] < 0.8 * errors["ifft"], errors


def test_dl_recipe_validation():
    with pytest.raises(UsageError, match="model"):
        parse_recipe({"method": "dl", "model": ""})
    assert parse_recipe({"method": "dl"}).model == "modl-synthetic"


def test_a_model_is_found_by_its_hash_under_the_models_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path))
    torch.manual_seed(2)
    card = save_model(MoDL(SMALL), tmp_path / "experiment" / "round-3.pt")
    net, loaded = load_model(card["sha256"][:12])
    assert loaded["sha256"] == card["sha256"] and net.config == SMALL
    shipped = json.loads((Path(model_files.SHIPPED_DIR) / "modl-synthetic.json").read_text())
    assert load_model(shipped["sha256"])[1]["sha256"] == shipped["sha256"]
    with pytest.raises(UsageError, match="no model"):
        load_model("0123456789abcdef")
