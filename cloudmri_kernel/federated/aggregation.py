"""The server side of a round: Flower strategies, guarded against sites that fail, drop out or send bad weights.

:func:`make_strategy` returns one of Flower's own strategies (FedAvg, FedProx, FedAdam, FedAvgM, FedTrimmedAvg,
Krum) extended by :class:`Guard`, which before Flower aggregates a round:

* drops replies whose arrays hold NaN or infinity, or whose update norm is absurd — more than
  :data:`ABSURD_FACTOR` times the median update norm of the round (with three or more replies) or than
  ``max_update_norm`` — and logs each rejection with the site and the reason;
* requires at least ``min_sites`` usable replies: with fewer, the round keeps the previous global weights
  and is recorded as incomplete (a site that drops out mid-round does not stop the experiment);
* keeps a :class:`RoundRecord` per round: which sites were asked, which trained, which failed or were
  rejected and why, and every site's metrics, for the experiment's record in the catalog.

Server-side optimizers are Flower's: ``fedadam`` treats the change of the average as a pseudo-gradient and takes
an Adam step of size ``server_lr`` on it (Reddi et al. 2021); ``fedavgm`` adds heavy-ball momentum
``server_momentum`` to it (Hsu et al. 2019), whose effective step ``server_lr / (1 - server_momentum)`` is 1 (plain
FedAvg's) at the defaults. Both change only how the server moves the global model; sites train as for FedAvg.

Robust aggregation is Flower's: ``trimmed-mean`` (Yin et al. 2018) and ``krum`` (Blanchard et al. 2017) bound
the influence of a site whose weights are wrong but finite.

Differential privacy (optional, ``dp_noise_multiplier > 0``): Flower's server-side fixed clipping clips every
site's update to norm C and adds Gaussian noise of standard deviation z·C/M to the average (M the number of
sites). The privacy budget is reported per round for the site-level add/remove relation: one site's influence on
the weighted average is at most max_i(w_i)·C, so the round's effective noise multiplier is z / (M·max_i w_i), and
the rounds compose in Rényi DP (Mironov 2017), converted to (ε, δ).

References:
    McMahan B et al. Communication-efficient learning of deep networks from decentralized data. AISTATS 2017.
    Li T et al. Federated optimization in heterogeneous networks (FedProx). MLSys 2020.
    Reddi S et al. Adaptive federated optimization (FedAdam). ICLR 2021.
    Hsu TH, Qi H, Brown M. Measuring the effects of non-identical data distribution for federated visual
    classification (FedAvgM). arXiv 1909.06335, 2019.
    Yin D et al. Byzantine-robust distributed learning: towards optimal statistical rates. ICML 2018.
    Blanchard P et al. Machine learning with adversaries: Byzantine tolerant gradient descent. NeurIPS 2017.
    McMahan HB et al. Learning differentially private recurrent language models. ICLR 2018.
    Mironov I. Rényi differential privacy. IEEE CSF 2017.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedTrimmedAvg,
    Krum,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from cloudmri_kernel.errors import UsageError

log = logging.getLogger(__name__)

STRATEGIES = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam, "fedavgm": FedAvgM,
              "trimmed-mean": FedTrimmedAvg, "krum": Krum}
#: FedAdam's server step and adaptivity (Reddi et al. 2021 tune η in 1e-3...1 and find τ = 1e-3 good).
FEDADAM_LR, FEDADAM_TAU = 1e-2, 1e-3
#: An update more than this many times the round's median update norm is rejected as absurd.
ABSURD_FACTOR = 50.0
#: Rényi orders over which the (ε, δ) conversion is minimized.
RDP_ORDERS = tuple([1 + x / 10 for x in range(1, 100)] + list(range(11, 257)))


def gaussian_epsilon(multipliers: list[float], delta: float) -> float:
    """ε of composed Gaussian mechanisms with these noise multipliers, at δ (RDP: α/(2z²) each, Mironov 2017)."""
    if not multipliers:
        return 0.0
    total = sum(1.0 / (2.0 * z * z) for z in multipliers)
    return min(alpha * total + np.log(1.0 / delta) / (alpha - 1.0) for alpha in RDP_ORDERS)


@dataclass
class RoundRecord:
    """What happened in one round (stored in the experiment's metrics)."""

    round: int
    asked: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    complete: bool = True
    epsilon: float | None = None
    train: dict[str, dict] = field(default_factory=dict)
    evaluate: dict[str, dict] = field(default_factory=dict)


def _site_of(msg: Message, names: dict[int, str]) -> str:
    record = msg.content.config_records.get("site") if not msg.has_error() else None
    if record is not None:
        return str(record["name"])
    return names.get(msg.metadata.src_node_id, f"node {msg.metadata.src_node_id}")


def _flat(arrays: ArrayRecord) -> np.ndarray:
    return np.concatenate([array.numpy().ravel().astype(np.float64) for array in arrays.values()])


class Guard:
    """Mixed into a Flower strategy by :func:`make_strategy` (see the module)."""

    min_sites: int
    max_update_norm: float | None
    dp: tuple[float, int, float] | None  # noise multiplier, sites the noise is divided by, delta
    rounds: list[RoundRecord]
    _global: np.ndarray | None
    _names: dict[int, str]

    def _record(self, server_round: int) -> RoundRecord:
        while len(self.rounds) < server_round:
            self.rounds.append(RoundRecord(len(self.rounds) + 1))
        return self.rounds[server_round - 1]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        self._global = _flat(arrays)
        if isinstance(self, FedAvgM):
            # FedAvgM steps from the weights it aggregated last; the global model sent may differ (DP noise is
            # added outside it, a round may have been kept), and the step must start from what the sites got.
            self.current_arrays = arrays
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._record(server_round).asked = sorted(self._names.get(m.metadata.dst_node_id,
                                                                  f"node {m.metadata.dst_node_id}")
                                                  for m in messages)
        return messages

    def _usable(self, server_round: int, replies: list[Message]) -> list[Message]:
        record = self._record(server_round)
        answered = []
        for msg in replies:
            site = _site_of(msg, self._names)
            if msg.has_error():
                record.failed[site] = msg.error.reason
                log.warning("round %d: %s failed: %s", server_round, site, msg.error.reason)
                continue
            self._names[msg.metadata.src_node_id] = site
            arrays = next(iter(msg.content.array_records.values()), None)
            if arrays is None:
                record.rejected[site] = "no weights in the reply"
                continue
            flat = _flat(arrays)
            if flat.shape != self._global.shape:
                record.rejected[site] = f"weights of the wrong size ({flat.size}, expected {self._global.size})"
            elif not np.all(np.isfinite(flat)):
                record.rejected[site] = "weights with NaN or infinity"
            elif self.max_update_norm is not None and np.linalg.norm(flat - self._global) > self.max_update_norm:
                record.rejected[site] = f"update norm above {self.max_update_norm}"
            else:
                answered.append((msg, site, float(np.linalg.norm(flat - self._global))))
                continue
            log.warning("round %d: rejected the weights of %s: %s", server_round, site, record.rejected[site])
        if len(answered) >= 3:
            median = float(np.median([norm for *_, norm in answered]))
            for msg, site, norm in list(answered):
                if median > 0 and norm > ABSURD_FACTOR * median:
                    record.rejected[site] = f"absurd update: norm {norm:.3g} is over {ABSURD_FACTOR:g}x the median"
                    log.warning("round %d: rejected the weights of %s: %s", server_round, site,
                                record.rejected[site])
                    answered.remove((msg, site, norm))
        usable = [msg for msg, *_ in answered]
        record.trained = sorted(site for _, site, _ in answered)
        for msg in usable:
            record.train[_site_of(msg, self._names)] = dict(next(iter(msg.content.metric_records.values())))
        return usable

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        usable = self._usable(server_round, list(replies))
        if len(usable) < self.min_sites:
            self._record(server_round).complete = False
            log.warning("round %d: only %d usable site(s), %d needed: the global model is kept", server_round,
                        len(usable), self.min_sites)
            return None, None
        if self.dp is not None:
            self._account(server_round, usable)
        return super().aggregate_train(server_round, usable)

    def _account(self, server_round: int, usable: list[Message]) -> None:
        """The round's effective noise multiplier (see the module) and the budget spent so far."""
        multiplier, sites, delta = self.dp
        counts = [float(next(iter(m.content.metric_records.values()))["num-examples"]) for m in usable]
        self._multipliers.append(multiplier / (sites * max(counts) / sum(counts)))
        self._record(server_round).epsilon = gaussian_epsilon(self._multipliers, delta)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        record = self._record(server_round)
        good = []
        for msg in replies:
            site = _site_of(msg, self._names)
            if msg.has_error():
                record.failed.setdefault(site, f"evaluation: {msg.error.reason}")
                log.warning("round %d: evaluation at %s failed: %s", server_round, site, msg.error.reason)
                continue
            record.evaluate[site] = dict(next(iter(msg.content.metric_records.values())))
            good.append(msg)
        if not good:
            return None
        # Weighted by examples, over the metrics every site reports (one with a validation split reports more).
        sites = [_site_of(m, self._names) for m in good]
        shared = set.intersection(*(set(record.evaluate[site]) for site in sites))
        return aggregate_metricrecords([RecordDict({"metrics": MetricRecord({key: record.evaluate[site][key]
                                                                            for key in shared})})
                                        for site in sites], "num-examples")


def make_strategy(name: str, min_sites: int = 1, max_update_norm: float | None = None, proximal_mu: float = 0.01,
                  trim_beta: float = 0.2, krum_byzantine: int = 1, server_lr: float | None = None,
                  server_momentum: float = 0.9, names: dict[int, str] | None = None,
                  dp_noise_multiplier: float = 0.0, dp_clipping_norm: float = 1.0, dp_sites: int | None = None,
                  dp_delta: float = 1e-5):
    """(the strategy to run, its :class:`Guard`): a guarded Flower strategy by name (:data:`STRATEGIES`), wrapped
    in Flower's server-side DP clipping when ``dp_noise_multiplier > 0``; every available site trains and
    evaluates.

    ``names`` maps node IDs to site names where they are known beforehand (in-process); otherwise a site is
    known by name from its first reply, and by node ID until then. ``dp_sites``: how many sites the noise is
    divided by (default ``min_sites``). ``server_lr``: the server's step for ``fedadam`` (default
    :data:`FEDADAM_LR`) and ``fedavgm`` (default ``1 - server_momentum``).
    """
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}: one of {', '.join(STRATEGIES)}")
    if min_sites < 1:
        raise UsageError("min_sites must be at least 1")
    base = STRATEGIES[name]
    options = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": min_sites,
               "min_evaluate_nodes": min_sites, "min_available_nodes": min_sites}
    if name == "fedprox":
        options["proximal_mu"] = proximal_mu
    elif name == "trimmed-mean":
        options["beta"] = trim_beta
    elif name == "krum":
        options["num_malicious_nodes"] = krum_byzantine
    elif name == "fedadam":
        options.update(eta=FEDADAM_LR if server_lr is None else server_lr, tau=FEDADAM_TAU)
    elif name == "fedavgm":
        if not 0 <= server_momentum < 1:
            raise UsageError(f"server_momentum must be in [0, 1), got {server_momentum}")
        options.update(server_momentum=server_momentum,
                       server_learning_rate=1.0 - server_momentum if server_lr is None else server_lr)
    if server_lr is not None and server_lr <= 0:
        raise UsageError(f"server_lr must be positive, got {server_lr}")
    guard = type(f"Guarded{base.__name__}", (Guard, base), {})(**options)
    guard.min_sites, guard.max_update_norm = min_sites, max_update_norm
    guard.rounds, guard._global, guard._names, guard._multipliers = [], None, dict(names or {}), []
    guard.dp = None
    if dp_noise_multiplier < 0 or dp_clipping_norm <= 0 or not 0 < dp_delta < 1:
        raise UsageError("differential privacy needs a noise multiplier >= 0, a clipping norm > 0 and 0 < delta < 1")
    if dp_noise_multiplier == 0:
        return guard, guard
    sites = dp_sites or min_sites
    guard.dp = (dp_noise_multiplier, sites, dp_delta)
    return DifferentialPrivacyServerSideFixedClipping(guard, dp_noise_multiplier, dp_clipping_norm, sites), guard
