"""Training and evaluation of the unrolled network on samples (synthetic, or from MRD files in a store).

One loop serves every way the project trains: a single machine (``cloudmri dl train``), each hospital site in
a federated round (``proximal_mu`` adds FedProx's proximal term towards the global weights), and the central
baseline on pooled data. Loss: mean absolute error of the magnitude image, in units of the target's peak (the
image-domain L1 loss of fastMRI-style training; magnitudes because coil maps estimated from the data carry
the object's phase, as at inference). Evaluation reports it with SSIM and PSNR
per the fastMRI definitions (:mod:`cloudmri_kernel.quality.metrics`) on magnitudes.

References:
    Li T, Sahu AK, Zaheer M, Sanjabi M, Talwalkar A, Smith V. Federated optimization in heterogeneous networks
    (FedProx). MLSys 2020.
    Zbontar J et al. fastMRI: an open dataset and benchmarks for accelerated MRI. arXiv 1811.08839.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch

from cloudmri_kernel.quality.metrics import psnr, ssim
from cloudmri_kernel.recon.synthetic import Sample, SyntheticSpec, centred_ifft2, synthetic_dataset
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig


@dataclass
class Batch:
    kspace: torch.Tensor
    mask: torch.Tensor
    maps: torch.Tensor
    target: torch.Tensor


def batches(samples: Sequence[Sample], size: int, device: str = "cpu",
            rng: np.random.Generator | None = None) -> list[Batch]:
    """Samples stacked ``size`` at a time (shuffled when ``rng`` is given).

    Samples of different shapes (pooled data from sites with different coil counts) go into separate batches.
    """
    order = rng.permutation(len(samples)) if rng is not None else np.arange(len(samples))
    groups: dict[tuple, list[int]] = {}
    for index in order:
        groups.setdefault(samples[index].kspace.shape, []).append(int(index))
    chunks = [members[start:start + size] for members in groups.values() for start in range(0, len(members), size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return [Batch(*(torch.from_numpy(np.stack([getattr(samples[i], name) for i in chunk])).to(device)
                    for name in ("kspace", "mask", "maps", "target"))) for chunk in chunks]


def loss_of(net: MoDL, batch: Batch) -> torch.Tensor:
    """Mean absolute error of the magnitude, relative to each target's peak magnitude."""
    target = batch.target.abs()
    peak = target.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return ((net(batch.kspace, batch.mask, batch.maps).abs() - target).abs() / peak).mean()


def train(net: MoDL, samples: Sequence[Sample], epochs: int = 1, batch_size: int = 4, lr: float = 1e-3,
          seed: int = 0, device: str = "cpu", proximal_mu: float = 0.0,
          global_state: dict[str, torch.Tensor] | None = None,
          optimizer_state: dict[int, dict[str, torch.Tensor]] | None = None, lamda_lr: float | None = None,
          on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam on :func:`loss_of`; returns the loss of every step.

    With ``proximal_mu > 0`` the objective gains :math:`\\frac{\\mu}{2}\\|w - w_{global}\\|^2` (FedProx), which
    keeps a site with unusual data from drifting far from the global model in one round.

    ``optimizer_state`` carries Adam's moment estimates from one call to the next (a site's across federated
    rounds): what it holds is loaded before the first step, and it is replaced by the state after the last
    (parameter index → ``step``, ``exp_avg``, ``exp_avg_sq``). An empty dict starts afresh.

    ``lamda_lr`` is Adam's step for log λ, MoDL's data-consistency weight (default ``lr``). Adam moves
    every parameter by at most about its step per iteration whatever the gradient, so at ``lr`` = 0.003 λ needs
    hundreds of epochs to travel one order of magnitude; noisy, coherently aliased data want λ ≈ 2, forty times
    the initial 0.05 (measured in ``docs/benchmarks/federated_vs_central.md``), which a ten times larger step
    reaches in tens of epochs.
    """
    if proximal_mu > 0 and global_state is None:
        raise ValueError("FedProx needs the global weights (global_state)")
    net.to(device).train()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam([{"params": [net.log_lamda], "lr": lr if lamda_lr is None else lamda_lr},
                                  {"params": list(net.denoiser.parameters())}], lr=lr)
    if optimizer_state:
        optimizer.load_state_dict({"state": optimizer_state,
                                   "param_groups": optimizer.state_dict()["param_groups"]})
    anchors = ({name: tensor.detach().to(device) for name, tensor in global_state.items()}
               if proximal_mu > 0 else {})
    losses = []
    for _ in range(epochs):
        for batch in batches(samples, batch_size, device, rng):
            loss = loss_of(net, batch)
            objective = loss
            if anchors:
                objective = loss + proximal_mu / 2 * sum(((p - anchors[n]) ** 2).sum()
                                                         for n, p in net.named_parameters())
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            losses.append(loss.detach().item())
            if on_step is not None:
                on_step(len(losses), losses[-1])
    if optimizer_state is not None:
        optimizer_state.clear()
        optimizer_state.update(optimizer.state_dict()["state"])
    return losses


class Kept(NamedTuple):
    """What :func:`train_keeping_best` did: the epoch whose state it kept, the epochs it ran, every step's loss."""

    epoch: int
    ran: int
    losses: list[float]


def train_keeping_best(net: MoDL, samples: Sequence[Sample], validation: Sequence[Sample], epochs: int,
                       every: int = 1, seed: int = 0, patience: int = 0, **options) -> Kept:
    """:func:`train` for up to ``epochs`` epochs, keeping the state that scores best on ``validation``.

    The network is scored (SSIM) before the first epoch and after every ``every`` epochs, with Adam's state carried
    across, and ends in the best-scoring state: early stopping (Prechelt L, "Early stopping - but when?", in
    Neural Networks: Tricks of the Trade, Springer 1998). Epoch 0 (the network as it came) is a candidate, so the
    result is never worse on the validation images than the start. With ``patience > 0`` training stops once that
    many epochs have passed since the best score without a better one (the "patience" rule, a simpler relative of
    Prechelt's stopping criteria), so that the budget follows convergence and ``epochs`` is a ceiling. Without
    validation images this is :func:`train` for every epoch.
    """
    if patience < 0:
        raise ValueError(f"patience must be 0 (run every epoch) or more, got {patience}")
    if not validation:
        return Kept(epochs, epochs, train(net, samples, epochs=epochs, seed=seed, **options))
    best_ssim, best_epoch = evaluate(net, validation)["ssim"], 0
    best = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
    kept: dict = {}
    losses: list[float] = []
    ran = 0
    for ran in range(every, epochs + 1, every):
        losses += train(net, samples, epochs=every, seed=seed + ran, optimizer_state=kept, **options)
        ssim = evaluate(net, validation)["ssim"]
        if ssim > best_ssim:
            best_ssim, best_epoch = ssim, ran
            best = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
        elif patience and ran - best_epoch >= patience:
            break
    net.load_state_dict(best)
    return Kept(best_epoch, ran, losses)


@torch.no_grad()
def evaluate(net: MoDL, samples: Sequence[Sample], batch_size: int = 8, device: str = "cpu") -> dict[str, float]:
    """Loss, SSIM and PSNR (fastMRI definitions, each image's own peak as data range), averaged over samples."""
    net.to(device).eval()
    losses, ssims, psnrs = [], [], []
    for batch in batches(samples, batch_size, device):
        output = net(batch.kspace, batch.mask, batch.maps)
        peak = batch.target.abs().flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        losses += ((output.abs() - batch.target.abs()).abs() / peak).mean(dim=(1, 2)).tolist()
        for truth, image in zip(batch.target.abs().cpu().numpy(), output.abs().cpu().numpy(), strict=True):
            ssims.append(ssim(truth[None], image[None]))
            psnrs.append(psnr(truth[None], image[None]))
    return {"loss": float(np.mean(losses)), "ssim": float(np.mean(ssims)), "psnr": float(np.mean(psnrs)),
            "count": len(samples)}


def zero_filled_metrics(samples: Sequence[Sample]) -> dict[str, float]:
    """SSIM and PSNR of the coil-combined zero-filled image :math:`S^H F^H y`, the floor any method must beat."""
    ssims, psnrs = [], []
    for s in samples:
        image = np.abs(np.sum(s.maps.conj() * centred_ifft2(s.kspace), axis=0))
        truth = np.abs(s.target)
        ssims.append(ssim(truth[None], image[None]))
        psnrs.append(psnr(truth[None], image[None]))
    return {"ssim": float(np.mean(ssims)), "psnr": float(np.mean(psnrs))}


def train_on_synthetic(spec: SyntheticSpec, train_count: int = 256, test_count: int = 32, epochs: int = 4,
                       batch_size: int = 4, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                       config: MoDLConfig | None = None,
                       on_step: Callable[[int, float], None] | None = None) -> tuple[MoDL, dict]:
    """A network trained from scratch on synthetic data, and the card that records how (figures included)."""
    torch.manual_seed(seed)
    net = MoDL(config)
    train_set = synthetic_dataset(spec, train_count, seed)
    test_set = synthetic_dataset(spec, test_count, seed + 1_000_003)
    started = time.perf_counter()
    losses = train(net, train_set, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                   on_step=on_step)
    seconds = time.perf_counter() - started
    card = {"training": {"data": "synthetic", "spec": asdict(spec), "train_count": train_count, "epochs": epochs,
                         "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
                         "seconds": round(seconds, 1), "final_loss": losses[-1]},
            "evaluation": {"test_count": test_count, "model": evaluate(net, test_set, device=device),
                           "zero_filled": zero_filled_metrics(test_set)}}
    return net, card
