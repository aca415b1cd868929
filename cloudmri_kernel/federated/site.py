"""The hospital side of federated training: a Flower ClientApp that trains and evaluates on its site's data.

On ``train`` a site loads the global weights it was sent, trains for the configured local epochs on its own
training split (adding FedProx's proximal term when the server's config carries ``proximal-mu``) and replies
with its new weights, its number of examples (the averaging weight) and its training loss. With
``keep-optimizer`` the site keeps its Adam moment estimates in its Flower context from one round to the next
(they never leave the site) instead of restarting Adam each round, whose first steps after a restart are as
large as the learning rate in every weight whatever the gradient (the stateful local optimizers of Reddi et al.
2021 and Wang et al. 2021). On ``evaluate`` it scores the weights it was sent on its held-out split (loss, SSIM,
PSNR).

With ``local-lamda`` a site keeps its own data-consistency weight :math:`\\lambda` of MoDL (in its Flower context,
like its optimizer state): after its first round it trains and evaluates the global denoiser with its own
:math:`\\lambda` instead of the one it was sent, and still replies with the weight it trained, so the global model's
:math:`\\lambda` is the sites' mean (a starting point for a new site). :math:`\\lambda` weighs the denoiser's image
against the site's measured data, so it belongs to the site's acquisition (noise, coils, acceleration): the site
with the noisiest, most aliased data learns one ten times the others'. Keeping it local is the idea of FedBN (Li et
al. 2021), which keeps batch-normalization statistics local, applied to the one acquisition-specific parameter of
an unrolled network. Every reply names the site in a ``site`` ConfigRecord, so the server can record per-site
metrics; no image or k-space ever leaves the site.

On ``train.personalize`` (after the last round, when the experiment asks for it) a site adapts the final global
model to its own data: it scores the model on its held-out split, fine-tunes it for ``personalize-epochs`` on its
training split (with a validation split and ``personalize-patience``, until that many epochs pass without a better
validation score), scores it again, and keeps the result **at the site**
(``$CLOUDMRI_MODELS_DIR/personalized/EXPERIMENT/SITE.pt`` of the site's process, with its card). It replies with
both scores, the model's SHA-256 and that path, never with its weights: a model fitted to one hospital's data is
that hospital's, and it says more about the site's data than an averaged round update does. A site with a
validation split keeps the fine-tuning epoch that scores best on it
(:func:`~cloudmri_kernel.recon.training.train_keeping_best`), and reports validation scores beside its held-out
ones every round.

References:
    Yu T, Bagdasaryan E, Shmatikov V. Salvaging federated learning by local adaptation. arXiv 2002.04758, 2020.
    Reddi S et al. Adaptive federated optimization. ICLR 2021.
    Wang J et al. A field guide to federated optimization. arXiv 2107.06917, 2021.
    Li X, Jiang M, Zhang X, Kamp M, Dou Q. FedBN: federated learning on non-IID features via local batch
    normalization. ICLR 2021.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated.sites import SiteConfig, load_site_data, load_site_splits
from cloudmri_kernel.recon import training
from cloudmri_kernel.recon.model_files import models_dir, save_model
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig

app = ClientApp()

#: Keys of the ConfigRecord the server sends with every round.
LOCAL_EPOCHS, LEARNING_RATE, BATCH_SIZE, PROXIMAL_MU = "local-epochs", "lr", "batch-size", "proximal-mu"
KEEP_OPTIMIZER, LAMDA_LR, LOCAL_LAMDA = "keep-optimizer", "lamda-lr", "local-lamda"
#: Where a site keeps its optimizer state, and its own data-consistency weight, in its Flower context.
OPTIMIZER_STATE, SITE_LAMDA = "optimizer-state", "site-lamda"
#: Keys of the personalization request (message type ``train.personalize``).
PERSONALIZE, PERSONALIZE_EPOCHS, EXPERIMENT_NAME = "personalize", "personalize-epochs", "experiment-name"
PERSONALIZE_PATIENCE = "personalize-patience"


def network_from(arrays: ArrayRecord, config: ConfigRecord) -> MoDL:
    """The network the server's architecture keys describe, with the arrays it sent."""
    architecture = MoDLConfig(**{key[len("modl-"):]: config[key] for key in config if key.startswith("modl-")})
    net = MoDL(architecture)
    net.load_state_dict(arrays.to_torch_state_dict())
    return net


def _with_site_lamda(net: MoDL, config: ConfigRecord, context: Context) -> MoDL:
    """With ``local-lamda``, the site's own data-consistency weight replaces the one it was sent (once it has one)."""
    if config.get(LOCAL_LAMDA, False) and SITE_LAMDA in context.state:
        with torch.no_grad():
            net.log_lamda.copy_(context.state[SITE_LAMDA].to_torch_state_dict()["log_lamda"])
    return net


def _training_options(config: ConfigRecord) -> dict:
    return {"batch_size": int(config.get(BATCH_SIZE, 4)), "lr": float(config.get(LEARNING_RATE, 1e-3)),
            "lamda_lr": float(config[LAMDA_LR]) if LAMDA_LR in config else None}


def _site(context: Context) -> SiteConfig:
    return SiteConfig.from_node_config(dict(context.node_config))


def _reply(msg: Message, site: SiteConfig, metrics: dict, arrays: ArrayRecord | None = None,
           model: dict | None = None) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"name": site.name, **(model or {})})})
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    site = _site(context)
    config = msg.content["config"]
    net = _with_site_lamda(network_from(msg.content["arrays"], config), config, context)
    global_state = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
    train_set, _ = load_site_data(site)
    mu = float(config.get(PROXIMAL_MU, 0.0))
    kept = _kept_optimizer(context) if config.get(KEEP_OPTIMIZER, False) else None
    losses = training.train(net, train_set, epochs=int(config.get(LOCAL_EPOCHS, 1)), **_training_options(config),
                            seed=site.seed + int(config["server-round"]), proximal_mu=mu,
                            global_state=global_state if mu > 0 else None, optimizer_state=kept)
    if config.get(LOCAL_LAMDA, False):
        context.state[SITE_LAMDA] = ArrayRecord({"log_lamda": net.log_lamda.detach().clone()})
    if kept is not None:
        context.state[OPTIMIZER_STATE] = ArrayRecord({f"{index}.{name}": tensor for index, moments in kept.items()
                                                      for name, tensor in moments.items()})
    state = {name: tensor.detach() for name, tensor in net.state_dict().items()}
    return _reply(msg, site, {"train-loss": sum(losses) / len(losses), "num-examples": len(train_set)},
                  ArrayRecord(state))


def _kept_optimizer(context: Context) -> dict[int, dict[str, torch.Tensor]]:
    """The optimizer state this site kept after its last round of this run (empty before its first)."""
    kept: dict[int, dict[str, torch.Tensor]] = {}
    if OPTIMIZER_STATE in context.state:
        for key, tensor in context.state[OPTIMIZER_STATE].to_torch_state_dict().items():
            index, name = key.split(".", 1)
            kept.setdefault(int(index), {})[name] = tensor
    return kept


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    site = _site(context)
    config = msg.content["config"]
    net = _with_site_lamda(network_from(msg.content["arrays"], config), config, context)
    _, validation, test_set = load_site_splits(site)
    splits = {"": test_set, "val-": validation} if validation else {"": test_set}
    metrics: dict = {"num-examples": len(test_set)}
    with torch.no_grad():
        for prefix, samples in splits.items():
            scores = training.evaluate(net, samples)
            metrics.update({prefix + key: scores[key] for key in ("loss", "ssim", "psnr")})
    return _reply(msg, site, metrics)


def personalized_path(experiment: str, site: str) -> Path:
    """Where a site keeps its personalized model of an experiment (in its own models directory).

    The experiment's name comes from the server: one that is not a plain file name is refused, so that no
    server can make a site write outside its models directory.
    """
    for part in (experiment, site):
        if part in ("", ".", "..") or Path(part).name != part or "\\" in part:
            raise UsageError(f"cannot keep a personalized model under the name {part!r}: use a plain name without "
                             "slashes")
    return models_dir() / "personalized" / experiment / f"{site}.pt"


@app.train(PERSONALIZE)
def personalize(msg: Message, context: Context) -> Message:
    """Fine-tune the final global model (with the site's own λ when it keeps one) on this site's training split,
    keeping the best epoch on its validation split when it has one; keep the model here (see the module). With 0
    epochs the kept model is the global model with the site's λ."""
    site = _site(context)
    config = msg.content["config"]
    net = _with_site_lamda(network_from(msg.content["arrays"], config), config, context)
    train_set, validation, test_set = load_site_splits(site)
    with torch.no_grad():
        before = training.evaluate(net, test_set)
    epochs, patience = int(config[PERSONALIZE_EPOCHS]), int(config.get(PERSONALIZE_PATIENCE, 0))
    kept = training.train_keeping_best(net, train_set, validation, epochs, seed=site.seed,
                                       patience=patience, **_training_options(config))
    with torch.no_grad():
        after = training.evaluate(net, test_set) if kept.epoch else before
    experiment = str(config[EXPERIMENT_NAME])
    path = personalized_path(experiment, site.name)
    card = save_model(net, path, {"experiment_name": experiment, "site": site.name,
                                  "training": {"data": "personalized", "from": "final global model",
                                               "epochs": epochs, "patience": patience,
                                               "epochs_run": kept.ran, "kept_epoch": kept.epoch,
                                               "train_count": len(train_set), "validation_count": len(validation),
                                               "site_lamda": bool(config.get(LOCAL_LAMDA, False))},
                                  "held_out": {"before": before, "after": after}})
    metrics = {f"{when}-{key}": scores[key] for when, scores in (("before", before), ("after", after))
               for key in ("loss", "ssim", "psnr")}
    if kept.losses:
        metrics["train-loss"] = sum(kept.losses) / len(kept.losses)
    return _reply(msg, site, {**metrics, "kept-epoch": kept.epoch, "epochs-run": kept.ran,
                              "num-examples": len(test_set)},
                  model={"sha256": card["sha256"], "path": str(path)})
