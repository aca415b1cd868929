"""Blinded reader studies: per-reader blinding, per-method Likert summaries and inter-reader agreement.

A reader study shows every reader the series of several reconstruction methods of the same datasets, each under an
opaque case code and in a random order of its own, and asks for 1-5 Likert scores per criterion (overall quality,
artifacts, SNR, diagnostic confidence). This module is the statistics and the blinding, without a database:

- :func:`blind_order`: a reader's cases in a random order with opaque codes. Both are derived from the study's
  secret seed and the reader's name by HMAC-SHA256, so they are reproducible for the study but reveal neither the
  method nor the dataset, and two readers see different codes for the same series (they cannot compare notes).
- :func:`weighted_kappa`: Cohen's weighted kappa of two readers on an ordinal scale (quadratic or linear weights).
- :func:`agreement`: weighted kappa for every pair of readers on the cases both scored, and their mean.
- :func:`krippendorff_alpha`: one agreement figure for any number of readers, cases scored by only some of them
  included (ordinal, interval or nominal); :func:`alpha_by_criterion` gives it per criterion of a study.
- :func:`method_summary`: per method and criterion the number of cases and ratings, the mean and a 95 %
  confidence interval. The case (the dataset a method reconstructed) is the unit of analysis: each case's score is
  the mean over its readers, and the interval is either Student's t over these case means or a percentile
  bootstrap that resamples cases with replacement (Efron 1979), so readers' repeated looks at one case are not
  counted as independent evidence.

References:
    Cohen J. Weighted kappa: nominal scale agreement with provision for scaled disagreement or partial credit.
    Psychol Bull 1968;70:213-220.
    Fleiss JL, Cohen J. The equivalence of weighted kappa and the intraclass correlation coefficient as measures of
    reliability. Educ Psychol Meas 1973;33:613-619.
    Efron B. Bootstrap methods: another look at the jackknife. Ann Stat 1979;7:1-26.
    Krippendorff K. Computing Krippendorff's alpha-reliability. Annenberg School for Communication, 2011
    (coincidence matrix, difference functions; its worked example is this module's test).
    Hayes AF, Krippendorff K. Answering the call for a standard reliability measure for coding data. Commun
    Methods Meas 2007;1:77-89.
    Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993 (percentile interval, ch. 13).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cloudmri_kernel.errors import UsageError

#: The criteria a study asks for unless its creator chooses others.
CRITERIA = ("overall", "artifacts", "snr", "confidence")
#: The Likert scale: 1 (non-diagnostic / severe) to 5 (excellent / none).
LIKERT = (1, 2, 3, 4, 5)
CODE_PREFIX = "C-"


@dataclass(frozen=True)
class BlindCase:
    """One case as a reader meets it: ``position`` in their order (0-based) and an opaque ``code``."""

    position: int
    code: str
    series_id: str


def _key(seed: str | int) -> bytes:
    return str(seed).encode()


def case_code(series_id: str, reader: str, seed: str | int) -> str:
    """The opaque code of one series for one reader: ``C-`` and 12 hex digits of HMAC-SHA256(seed, reader, series).

    Without the study's seed the code cannot be linked to the series (or to another reader's code for it).
    """
    digest = hmac.new(_key(seed), f"case\0{reader}\0{series_id}".encode(), hashlib.sha256).hexdigest()
    return CODE_PREFIX + digest[:12]


def blind_order(series_ids: Iterable[str], reader: str, seed: str | int) -> list[BlindCase]:
    """A reader's cases: a random permutation of ``series_ids`` with opaque codes, deterministic per (seed, reader).

    The order does not depend on the order ``series_ids`` come in (they are sorted first), so the same study always
    shows a reader the same sequence; different readers get independent permutations.
    """
    ids = sorted(set(series_ids))
    if not ids:
        raise UsageError("a reader study needs at least one series")
    if not reader:
        raise UsageError("a reader needs a name")
    state = hmac.new(_key(seed), f"order\0{reader}".encode(), hashlib.sha256).digest()
    random.Random(int.from_bytes(state, "big")).shuffle(ids)
    cases = [BlindCase(position, case_code(series_id, reader, seed), series_id)
             for position, series_id in enumerate(ids)]
    if len({case.code for case in cases}) != len(cases):  # 48-bit codes: a collision is a 1e-10 event
        raise UsageError("two cases got the same code; create the study again (a new seed)")
    return cases


def weighted_kappa(a: Sequence[int], b: Sequence[int], weights: str = "quadratic",
                   categories: Sequence[int] = LIKERT) -> float:
    """Cohen's weighted kappa of two raters' ordinal ratings of the same items.

    .. math::

        \\kappa_w = 1 - \\frac{\\sum_{ij} w_{ij} O_{ij}}{\\sum_{ij} w_{ij} E_{ij}}, \\qquad
        w_{ij} = \\left(\\frac{i - j}{k - 1}\\right)^2 \\text{ (quadratic) or } \\frac{|i - j|}{k - 1}
        \\text{ (linear)},

    with :math:`O` the observed joint proportions and :math:`E` the product of the marginals (chance agreement).
    ``weights=None`` gives Cohen's unweighted kappa. Weights follow the category *values* of the whole scale, as in
    ``sklearn.metrics.cohen_kappa_score(a, b, labels=categories, weights=...)``.

    Raises:
        UsageError: different lengths, no items, a rating outside ``categories``, or no variation at all (both raters
        always gave the same single category: chance agreement is perfect and kappa is undefined).
    """
    if len(a) != len(b):
        raise UsageError(f"the two readers rated different numbers of items ({len(a)} and {len(b)})")
    if not a:
        raise UsageError("weighted kappa needs at least one item rated by both readers")
    index = {category: i for i, category in enumerate(categories)}
    unknown = sorted({v for v in itertools.chain(a, b) if v not in index}, key=str)
    if unknown:
        raise UsageError(f"ratings {unknown} are not on the scale {list(categories)}")
    k = len(categories)
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[index[x], index[y]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))) / max(k - 1, 1)
    if weights == "quadratic":
        w = distance**2
    elif weights == "linear":
        w = distance
    elif weights is None:
        w = (distance > 0).astype(float)
    else:
        raise UsageError(f"weights must be 'quadratic', 'linear' or None, not {weights!r}")
    chance = float((w * expected).sum())
    if chance == 0:
        raise UsageError("kappa is undefined: both readers gave every item the same single score")
    return 1.0 - float((w * observed).sum()) / chance


@dataclass(frozen=True)
class Rating:
    """One reader's scores of one case: the series' ``method`` and its ``case`` (the dataset it reconstructs)."""

    reader: str
    method: str
    case: str
    scores: Mapping[str, int]


@dataclass(frozen=True)
class MethodSummary:
    """Per method and criterion: cases and ratings counted, the mean of case means and its confidence interval
    (``low``/``high`` are None with fewer than two cases)."""

    method: str
    criterion: str
    n_cases: int
    n_ratings: int
    mean: float
    low: float | None
    high: float | None


def _t_interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def _bootstrap_interval(values: np.ndarray, level: float, resamples: int,
                        rng: np.random.Generator) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


def method_summary(ratings: Iterable[Rating], criteria: Sequence[str] = CRITERIA, interval: str = "bootstrap",
                   level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> list[MethodSummary]:
    """Mean score per method and criterion with a confidence interval over cases.

    Each case's score is the mean of its readers' scores; the summary is the mean of these case means.
    ``interval="t"``: Student's t interval of the case means; ``"bootstrap"``: the percentile interval of
    ``resamples`` means of cases drawn with replacement (reproducible for a given ``seed``). Ratings lacking a
    criterion are left out of that criterion.
    """
    if interval not in ("bootstrap", "t"):
        raise UsageError(f"interval must be 'bootstrap' or 't', not {interval!r}")
    if not 0 < level < 1:
        raise UsageError(f"the confidence level must be between 0 and 1, not {level}")
    by_case: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for rating in ratings:
        for criterion in criteria:
            if criterion in rating.scores:
                by_case[(rating.method, criterion)][rating.case].append(rating.scores[criterion])
    rng = np.random.default_rng(seed)
    summaries = []
    for (method, criterion), cases in sorted(by_case.items(), key=lambda item: (item[0][0],
                                                                                 criteria.index(item[0][1]))):
        means = np.array([np.mean(scores) for _, scores in sorted(cases.items())], dtype=float)
        low, high = (_t_interval(means, level) if interval == "t"
                     else _bootstrap_interval(means, level, resamples, rng))
        summaries.append(MethodSummary(method, criterion, len(means), sum(map(len, cases.values())),
                                       float(means.mean()), low, high))
    return summaries


@dataclass(frozen=True)
class PairAgreement:
    """Weighted kappa of two readers on one criterion over the ``n`` cases both scored (None: undefined)."""

    reader_a: str
    reader_b: str
    criterion: str
    n: int
    kappa: float | None


def agreement(ratings: Iterable[Rating], criteria: Sequence[str] = CRITERIA,
              weights: str = "quadratic") -> tuple[list[PairAgreement], dict[str, float | None]]:
    """Weighted kappa for every pair of readers and criterion, and per criterion the mean over the defined pairs.

    Cases are matched by (method, case): the same series scored by both readers.
    """
    table: dict[str, dict[tuple[str, str], Mapping[str, int]]] = defaultdict(dict)
    for rating in ratings:
        table[rating.reader][(rating.method, rating.case)] = rating.scores
    pairs = []
    for criterion in criteria:
        for reader_a, reader_b in itertools.combinations(sorted(table), 2):
            common = sorted(key for key in table[reader_a].keys() & table[reader_b].keys()
                            if criterion in table[reader_a][key] and criterion in table[reader_b][key])
            a = [table[reader_a][key][criterion] for key in common]
            b = [table[reader_b][key][criterion] for key in common]
            try:
                kappa = weighted_kappa(a, b, weights) if len(common) >= 2 else None
            except UsageError:
                kappa = None
            pairs.append(PairAgreement(reader_a, reader_b, criterion, len(common), kappa))
    means = {}
    for criterion in criteria:
        defined = [p.kappa for p in pairs if p.criterion == criterion and p.kappa is not None]
        means[criterion] = float(np.mean(defined)) if defined else None
    return pairs, means


ALPHA_LEVELS = ("ordinal", "interval", "nominal")


def krippendorff_alpha(units: Iterable[Sequence[float | None]], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha of the values readers gave to units (one sequence per unit; None: not rated).

    .. math::

        \\alpha = 1 - (n - 1) \\frac{\\sum_{c,k} o_{ck} \\delta^2_{ck}}{\\sum_{c,k} n_c n_k \\delta^2_{ck}}

    over the coincidence matrix :math:`o_{ck} = \\sum_u \\#(c,k \\text{ pairs in } u) / (m_u - 1)` of the
    units rated at least twice (:math:`m_u` values), with :math:`n_c` its margins and :math:`n` their sum.
    :math:`\\delta^2` is 1 for unequal values (nominal), :math:`(c - k)^2` (interval), or for ordinal data
    :math:`(\\sum_{g=c}^{k} n_g - (n_c + n_k)/2)^2`, which counts how many ratings lie between the two.
    Returns None when fewer than two values are pairable or all pairable values are equal (no variation to
    agree about).
    """
    if level not in ALPHA_LEVELS:
        raise UsageError(f"unknown level of measurement {level!r}: one of {', '.join(ALPHA_LEVELS)}")
    rated = [[v for v in unit if v is not None] for unit in units]
    rated = [unit for unit in rated if len(unit) >= 2]
    values = sorted({v for unit in rated for v in unit})
    if len(values) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for unit in rated:
        counts = np.bincount([index[v] for v in unit], minlength=len(values)).astype(float)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    margins = coincidence.sum(axis=1)
    total = margins.sum()
    scale = np.asarray(values, dtype=float)
    if level == "nominal":
        delta = 1.0 - np.eye(len(values))
    elif level == "interval":
        delta = (scale[:, None] - scale[None, :]) ** 2
    else:
        cumulative = np.concatenate([[0.0], np.cumsum(margins)])
        ranks = np.arange(len(values))
        low, high = np.minimum.outer(ranks, ranks), np.maximum.outer(ranks, ranks)
        between = cumulative[high + 1] - cumulative[low]
        delta = (between - (margins[:, None] + margins[None, :]) / 2) ** 2
    expected = (np.outer(margins, margins) * delta).sum()
    return float(1.0 - (total - 1) * (coincidence * delta).sum() / expected)


def alpha_by_criterion(ratings: Iterable[Rating], criteria: Sequence[str] = CRITERIA,
                       level: str = "ordinal") -> dict[str, float | None]:
    """Krippendorff's alpha per criterion over every reader; a unit is one series (method, case)."""
    units: dict[str, dict[tuple[str, str], list[int]]] = {c: defaultdict(list) for c in criteria}
    for rating in ratings:
        for criterion in criteria:
            if criterion in rating.scores:
                units[criterion][(rating.method, rating.case)].append(rating.scores[criterion])
    return {c: krippendorff_alpha(units[c].values(), level) for c in criteria}
