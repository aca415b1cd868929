"""A federated experiment: rounds of Flower training across sites, every global model kept by its hash.

:func:`run_experiment` starts from a freshly initialized network (or given weights), runs the guarded strategy
(:mod:`.aggregation`) for the configured rounds over a Flower ``Grid`` (in-process by default, a SuperLink's in a
deployment), and after every round writes the global model (:func:`~cloudmri_kernel.recon.model_files.save_model`,
card with the round's per-site metrics), records it in the catalog's ``models`` table with its SHA-256, queues
that hash for anchoring on the ledger when a ledger is given, and updates the ``experiments`` row: configuration,
which sites took part, and per round who trained, who failed or was rejected and why, and each site's training
loss and held-out loss/SSIM/PSNR.

With ``personalize_epochs > 0``, after the last round every site fine-tunes the final global model on its own
training split in its own ClientApp (``train.personalize``, :mod:`.site`: local adaptation, Yu et al. 2020) and
keeps the personalized model; the experiment records, per site, the held-out scores before and after and the
personalized model's SHA-256 (queued for the ledger like the global models) and where the site keeps it. The
catalog's ``metrics`` list then ends with one ``{"personalization": ...}`` entry after the round records. With
``local_lamda`` (each site keeps its own data-consistency weight) the same step keeps, at each site, the final
global model with the site's own weight, fine-tuned when ``personalize_epochs > 0``. With
``personalize_patience`` a site stops fine-tuning when its validation score stops improving, so each site's
budget follows its own convergence instead of one number for all.

With ``rounds_patience`` the rounds follow convergence too: sites with a validation split score every round's
global model on it, the round's score is the mean of the sites' validation SSIM (each hospital counting once,
whatever its size), and the experiment stops once that many rounds pass without a better one (``rounds`` is then
a ceiling). It keeps the best round's global model (:attr:`ExperimentResult.kept`): that is the model the
experiment offers for reconstruction and the one sites personalize; the catalog's ``metrics`` list records it in a
``{"kept": ...}`` entry after the round records. This is early stopping on a validation set (Prechelt 1998) with
the federated evaluation of FedAvg (McMahan et al. 2017) as the validation score; no held-out image takes part in
the choice.

References:
    McMahan B et al. Communication-efficient learning of deep networks from decentralized data. AISTATS 2017.
    Prechelt L. Early stopping - but when? In: Neural Networks: Tricks of the Trade, Springer 1998, 55-69.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated.aggregation import STRATEGIES, RoundRecord, make_strategy
from cloudmri_kernel.federated.simulation import InProcessGrid
from cloudmri_kernel.federated.site import (
    BATCH_SIZE,
    EXPERIMENT_NAME,
    KEEP_OPTIMIZER,
    LAMDA_LR,
    LEARNING_RATE,
    LOCAL_EPOCHS,
    LOCAL_LAMDA,
    PERSONALIZE,
    PERSONALIZE_EPOCHS,
    PERSONALIZE_PATIENCE,
)
from cloudmri_kernel.federated.site import app as site_app
from cloudmri_kernel.federated.sites import SiteConfig
from cloudmri_kernel.recon.model_files import save_model
from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig

log = logging.getLogger(__name__)

#: Node IDs of in-process sites start here (Flower's SuperLink itself is node 1).
FIRST_NODE_ID = 1001


@dataclass(frozen=True)
class ExperimentConfig:
    """What the server runs. ``min_sites``: fewest usable sites for a round to update the global model.

    ``dp_noise_multiplier > 0`` switches on differential privacy (server-side clipping of each site's update to
    ``dp_clipping_norm`` plus Gaussian noise); every round then records the ε spent so far at ``dp_delta``.

    ``keep_optimizer_state``: each site keeps its Adam moments from round to round (see
    :mod:`~cloudmri_kernel.federated.site`) rather than restarting Adam every round.

    ``server_lr`` and ``server_momentum`` are the server optimizer's (``fedadam``, ``fedavgm``; default: see
    :func:`~.aggregation.make_strategy`). ``personalize_epochs > 0``: after the last round each site fine-tunes
    the final global model for that many epochs on its own training split and keeps it (see the module);
    ``personalize_patience > 0``: a site with a validation split stops fine-tuning once that many epochs have
    passed without a better validation score (``personalize_epochs`` is then a ceiling). ``rounds_patience > 0``:
    the rounds stop once that many have passed without a better mean validation SSIM over the sites, and the
    best round's model is kept (see the module; needs sites with validation splits).

    ``lamda_lr``: Adam's step for the logarithm of MoDL's data-consistency weight λ (default ``lr``; see
    :func:`~cloudmri_kernel.recon.training.train`). ``local_lamda``: each site keeps its own λ (see
    :mod:`~cloudmri_kernel.federated.site`); sites then also keep the global model with their own λ after the last
    round, as they keep a fine-tuned one (with ``personalize_epochs > 0``, fine-tuning starts from it).
    """

    name: str = "federated"
    strategy: str = "fedavg"
    rounds: int = 3
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 4
    keep_optimizer_state: bool = True
    min_sites: int = 1
    proximal_mu: float = 0.01
    max_update_norm: float | None = None
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0
    dp_delta: float = 1e-5
    server_lr: float | None = None
    server_momentum: float = 0.9
    personalize_epochs: int = 0
    personalize_patience: int = 0
    rounds_patience: int = 0
    lamda_lr: float | None = None
    local_lamda: bool = False
    seed: int = 0
    architecture: MoDLConfig = field(default_factory=MoDLConfig)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise UsageError(f"unknown strategy {self.strategy!r}: one of {', '.join(STRATEGIES)}")
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1 or self.min_sites < 1:
            raise UsageError("rounds, local_epochs, batch_size and min_sites must be at least 1")
        if self.personalize_epochs < 0:
            raise UsageError(f"personalize_epochs must be 0 (no personalization) or more, got "
                             f"{self.personalize_epochs}")
        if self.personalize_patience < 0:
            raise UsageError(f"personalize_patience must be 0 (fine-tune every epoch) or more, got "
                             f"{self.personalize_patience}")
        if self.rounds_patience < 0:
            raise UsageError(f"rounds_patience must be 0 (run every round) or more, got {self.rounds_patience}")
        if self.lamda_lr is not None and self.lamda_lr <= 0:
            raise UsageError(f"lamda_lr must be positive, got {self.lamda_lr}")
        if self.server_lr is not None and self.server_lr <= 0:
            raise UsageError(f"server_lr must be positive, got {self.server_lr}")
        if not 0 <= self.server_momentum < 1:
            raise UsageError(f"server_momentum must be in [0, 1), got {self.server_momentum}")

    @property
    def personalizes(self) -> bool:
        """Whether sites keep a model of their own after the last round (fine-tuned, or with their own λ)."""
        return self.personalize_epochs > 0 or self.local_lamda

    def round_config(self) -> ConfigRecord:
        """What every site is sent with the weights: training settings and the architecture."""
        values = {LOCAL_EPOCHS: self.local_epochs, LEARNING_RATE: self.lr, BATCH_SIZE: self.batch_size,
                  KEEP_OPTIMIZER: self.keep_optimizer_state, LOCAL_LAMDA: self.local_lamda}
        if self.lamda_lr is not None:
            values[LAMDA_LR] = self.lamda_lr
        values.update({f"modl-{key}": value for key, value in self.architecture.to_dict().items()})
        return ConfigRecord(values)


def experiment_from_mapping(content: dict) -> ExperimentConfig:
    """An ExperimentConfig from YAML/JSON settings (``architecture`` as a nested mapping); errors name the key."""
    content = dict(content)
    try:
        architecture = MoDLConfig(**content.pop("architecture", None) or {})
        return ExperimentConfig(**content, architecture=architecture)
    except TypeError as exc:
        raise UsageError(f"unknown or missing experiment setting ({exc})") from None


@dataclass
class GlobalModel:
    round: int
    path: Path
    sha256: str


@dataclass
class PersonalizedModel:
    """A site's fine-tuned copy of the final global model: held-out scores before and after, where the site
    keeps it (a path on the site's machine), the fine-tuning epoch it kept (the best on its validation split
    when it has one, else the last; 0: the model as sent) and the epochs it ran (fewer than asked when it stopped
    for lack of progress, ``personalize_patience``)."""

    site: str
    before: dict[str, float]
    after: dict[str, float]
    sha256: str
    path: str
    kept_epoch: int = 0
    epochs_run: int = 0


@dataclass
class Personalization:
    """The personalization step: epochs (the most, with ``patience`` > 0), each site's :class:`PersonalizedModel`,
    sites that failed and why, and its wall time (the sites fine-tune one after the other in process, in parallel
    in a deployment)."""

    epochs: int
    patience: int = 0
    sites: dict[str, PersonalizedModel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ExperimentResult:
    """What a run left: its catalog ID, every round's record and global model (``models[r]`` is round r's; 0 the
    initial one), and the personalization step when asked for; ``stopped`` when ``stop`` ended it before its last
    round (then nothing is personalized). ``kept_round``: with ``rounds_patience``, the round whose model had the
    best mean validation SSIM (None without: the last round's model is kept)."""

    experiment_id: str | None
    rounds: list[RoundRecord]
    models: list[GlobalModel]
    seconds: float
    stopped: bool = False
    personalization: Personalization | None = None
    kept_round: int | None = None

    @property
    def final(self) -> GlobalModel:
        """The last round's global model."""
        return self.models[-1]

    @property
    def kept(self) -> GlobalModel:
        """The model the experiment offers: the best round's on validation with ``rounds_patience``, else the
        last."""
        return self.final if self.kept_round is None else self.models[self.kept_round]


def validation_score(record: RoundRecord) -> float | None:
    """A round's score for choosing among rounds: the mean validation SSIM of the sites that reported one (each
    site counting once), None when none has a validation split."""
    scores = [metrics["val-ssim"] for metrics in record.evaluate.values() if "val-ssim" in metrics]
    return sum(scores) / len(scores) if scores else None


@dataclass
class BestRound:
    """Early stopping over rounds (see the module): the best round so far by :func:`validation_score` and its
    weights, and whether ``patience`` rounds have passed without a better one."""

    patience: int
    round: int | None = None
    score: float = float("-inf")
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def update(self, record: RoundRecord, net: MoDL) -> bool:
        """Take round ``record.round`` (its global weights in ``net``) into account; True when the rounds should
        stop."""
        score = validation_score(record)
        if score is not None and score > self.score:
            self.round, self.score = record.round, score
            self.state = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
        return self.round is not None and record.round - self.round >= self.patience


def _catalog_start(catalog, config: ExperimentConfig, sites: Sequence[SiteConfig], created_by: str) -> str | None:
    if catalog is None:
        return None
    from cloudmri_kernel.catalog.models import Experiment

    with catalog.session() as session:
        experiment = Experiment(name=config.name, created_by=created_by, status="running",
                                config={**asdict(config), "sites": [s.to_node_config() for s in sites]},
                                sites=[s.name for s in sites])
        session.add(experiment)
        session.flush()
        return experiment.id


def _catalog_round(catalog, experiment_id: str | None, rounds: list[RoundRecord], model: GlobalModel,
                   status: str, kept: dict | None = None) -> None:
    if catalog is None:
        return
    from sqlalchemy import select

    from cloudmri_kernel.catalog.models import Experiment, Model

    record = rounds[model.round - 1] if model.round else None
    with catalog.session() as session:
        experiment = session.get(Experiment, experiment_id)
        experiment.metrics = [asdict(r) for r in rounds] + ([{"kept": kept}] if kept else [])
        experiment.sites = sorted({site for r in rounds for site in r.trained}) or experiment.sites
        experiment.status = status
        if session.scalar(select(Model.id).where(Model.sha256 == model.sha256)) is None:
            session.add(Model(name=f"{experiment.name} round {model.round}", sha256=model.sha256,
                              experiment_id=experiment_id, round=model.round,
                              metrics={"evaluate": record.evaluate, "train": record.train} if record else {}))


def _catalog_personalization(catalog, experiment_id: str | None, personalization: Personalization) -> None:
    if catalog is None:
        return
    from cloudmri_kernel.catalog.models import Experiment

    with catalog.session() as session:
        experiment = session.get(Experiment, experiment_id)
        experiment.metrics = [*experiment.metrics, {"personalization": asdict(personalization)}]
        experiment.status = "finished"


def _catalog_failed(catalog, experiment_id: str | None) -> None:
    if catalog is None or experiment_id is None:
        return
    from cloudmri_kernel.catalog.models import Experiment

    with catalog.session() as session:
        session.get(Experiment, experiment_id).status = "failed"


def personalize(grid, config: ExperimentConfig, arrays: ArrayRecord, names: dict[int, str]) -> Personalization:
    """Ask every site of ``grid`` to fine-tune ``arrays`` on its own data and keep the result (:mod:`.site`)."""
    values = {**config.round_config(), PERSONALIZE_EPOCHS: config.personalize_epochs,
              PERSONALIZE_PATIENCE: config.personalize_patience, EXPERIMENT_NAME: config.name}
    messages = [Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord(values)}),
                        message_type=f"train.{PERSONALIZE}", dst_node_id=node) for node in grid.get_node_ids()]
    result = Personalization(config.personalize_epochs, config.personalize_patience)
    started = time.perf_counter()
    replies = list(grid.send_and_receive(messages, timeout=3600))
    result.seconds = time.perf_counter() - started
    for node in {m.metadata.dst_node_id for m in messages} - {reply.metadata.src_node_id for reply in replies}:
        result.failed[names.get(node, f"node {node}")] = "no reply within the timeout"
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            result.failed[names.get(node, f"node {node}")] = reply.error.reason
            continue
        site = reply.content["site"]
        metrics = reply.content["metrics"]
        scores = {when: {key: float(metrics[f"{when}-{key}"]) for key in ("loss", "ssim", "psnr")}
                  for when in ("before", "after")}
        result.sites[str(site["name"])] = PersonalizedModel(str(site["name"]), scores["before"], scores["after"],
                                                            str(site["sha256"]), str(site["path"]),
                                                            int(metrics["kept-epoch"]), int(metrics["epochs-run"]))
    return result


class _Stop(Exception):  # noqa: N818 (a request, not an error)
    """Ends Flower's round loop from the round callback: the caller asked to stop, or (``converged``) the rounds
    stopped improving the validation score."""

    def __init__(self, converged: bool = False):
        super().__init__()
        self.converged = converged


def run_experiment(config: ExperimentConfig, sites: Sequence[SiteConfig], out_dir: str | Path, *, catalog=None,
                   created_by: str = "federated", ledger=None, grid=None,
                   initial: dict[str, torch.Tensor] | None = None,
                   on_round: Callable[[RoundRecord], None] | None = None,
                   stop: threading.Event | None = None) -> ExperimentResult:
    """Run the experiment (see the module); the global models go to ``out_dir/round-N.pt``.

    ``on_round`` is called after every round with its record; setting ``stop`` ends the experiment after the
    round in flight (its model is kept; the catalog says ``stopped``).
    """
    if config.rounds_patience and sites and not any(site.val_count for site in sites):
        raise UsageError("rounds_patience chooses rounds on the sites' validation splits: give at least one site a "
                         "val_count")
    names: dict[int, str] = {}
    if grid is None:
        if not sites:
            raise UsageError("an experiment needs at least one site")
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise UsageError(f"site names must be unique, got {', '.join(names)}")
        grid = InProcessGrid(site_app, {FIRST_NODE_ID + index: site.to_node_config()
                                        for index, site in enumerate(sites)})
    if isinstance(grid, InProcessGrid):
        names = grid.site_names()
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    net = MoDL(config.architecture)
    if initial is not None:
        net.load_state_dict(initial)
    strategy, guard = make_strategy(config.strategy, min_sites=config.min_sites,
                                    max_update_norm=config.max_update_norm, proximal_mu=config.proximal_mu,
                                    server_lr=config.server_lr, server_momentum=config.server_momentum,
                                    names=names, dp_noise_multiplier=config.dp_noise_multiplier,
                                    dp_clipping_norm=config.dp_clipping_norm, dp_delta=config.dp_delta,
                                    dp_sites=max(config.min_sites, len(sites)))
    experiment_id = _catalog_start(catalog, config, sites, created_by)
    models: list[GlobalModel] = []
    best = BestRound(config.rounds_patience) if config.rounds_patience else None

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        net.load_state_dict(arrays.to_torch_state_dict())
        record = guard.rounds[server_round - 1] if server_round else None
        card = {"experiment": experiment_id, "experiment_name": config.name, "round": server_round,
                "strategy": config.strategy, "training": {"data": "federated", "sites": [s.name for s in sites]},
                "round_record": asdict(record) if record else None}
        path = out_dir / f"round-{server_round}.pt"
        saved = save_model(net, path, card)
        model = GlobalModel(server_round, path, saved["sha256"])
        models.append(model)
        if ledger is not None:
            ledger.add("model", model.sha256, experiment_id or config.name, name=f"{config.name}/round-{server_round}")
        if record is not None and on_round is not None:
            on_round(record)
        last = server_round == config.rounds
        converged = best is not None and record is not None and best.update(record, net) and not last
        stopping = stop is not None and stop.is_set() and not last and not converged
        done = "personalizing" if config.personalizes else "finished"
        kept = None if best is None or best.round is None else {
            "round": best.round, "rounds_run": server_round, "patience": best.patience, "validation_ssim": best.score}
        _catalog_round(catalog, experiment_id, guard.rounds, model,
                       done if last or converged else "stopped" if stopping else "running", kept)
        if converged or stopping:
            raise _Stop(converged)
        return None

    started = time.perf_counter()
    try:
        strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=config.rounds,
                       train_config=config.round_config(), evaluate_config=config.round_config(),
                       evaluate_fn=after_round)
    except _Stop as request:
        if not request.converged:
            return ExperimentResult(experiment_id, guard.rounds, models, time.perf_counter() - started, stopped=True,
                                    kept_round=best.round if best else None)
    except BaseException:
        _catalog_failed(catalog, experiment_id)
        raise
    result = ExperimentResult(experiment_id, guard.rounds, models, time.perf_counter() - started,
                              kept_round=best.round if best else None)
    if best is not None and best.round is None:
        log.warning("rounds_patience: no site reported a validation score, so the last round's model is kept")
    elif best is not None:
        net.load_state_dict(best.state)
    if config.personalizes:
        try:
            result.personalization = personalize(grid, config, ArrayRecord(net.state_dict()), guard._names)
        except BaseException:
            _catalog_failed(catalog, experiment_id)
            raise
        if ledger is not None:
            for site, model in result.personalization.sites.items():
                ledger.add("model", model.sha256, experiment_id or config.name,
                           name=f"{config.name}/personalized/{site}")
        _catalog_personalization(catalog, experiment_id, result.personalization)
    return result
