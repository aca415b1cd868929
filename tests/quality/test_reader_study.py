"""Reader-study statistics and blinding, against values worked out by hand and textbook identities."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.quality.reader_study import (
    Rating,
    agreement,
    alpha_by_criterion,
    blind_order,
    case_code,
    krippendorff_alpha,
    method_summary,
    weighted_kappa,
)

SERIES = sorted(hashlib.md5(str(i).encode()).hexdigest() for i in range(12))  # like catalog IDs


def test_blind_order_is_a_permutation_with_opaque_codes():
    cases = blind_order(SERIES, "rita", seed="s3cret")
    assert sorted(c.series_id for c in cases) == SERIES
    assert [c.position for c in cases] == list(range(len(SERIES)))
    for case in cases:
        assert case.code.startswith("C-") and len(case.code) == 14
        assert case.code[2:] not in case.series_id and case.series_id[:12] not in case.code
    assert len({c.code for c in cases}) == len(SERIES)


def test_blind_order_is_deterministic_per_seed_and_reader_and_ignores_input_order():
    first = blind_order(SERIES, "rita", seed="s3cret")
    assert blind_order(list(reversed(SERIES)), "rita", seed="s3cret") == first
    other_reader = blind_order(SERIES, "ray", seed="s3cret")
    other_seed = blind_order(SERIES, "rita", seed="another")
    assert [c.series_id for c in other_reader] != [c.series_id for c in first]
    assert [c.series_id for c in other_seed] != [c.series_id for c in first]
    # two readers never share a code for the same series, so they cannot compare notes
    assert not {c.code for c in first} & {c.code for c in other_reader}
    assert case_code(SERIES[0], "rita", "s3cret") == next(c.code for c in first if c.series_id == SERIES[0])


def test_blind_order_refuses_an_empty_study():
    with pytest.raises(UsageError, match="at least one series"):
        blind_order([], "rita", seed=1)


def test_unweighted_kappa_of_the_textbook_two_by_two_table():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15; p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert weighted_kappa(a, b, weights=None, categories=("yes", "no")) == pytest.approx(0.4)


def test_weighted_kappa_of_a_small_table_worked_by_hand():
    # O = diag-ish thirds with one (3, 2) disagreement; E from marginals (1/3,1/3,1/3) x (1/3,2/3,0):
    # linear: 1 - (1/6) / (7/18) = 4/7; quadratic: 1 - (1/12) / (1/4) = 2/3 (weights scaled by the same k-1
    # on a 1-5 scale cancel).
    a, b = [1, 2, 3], [1, 2, 2]
    assert weighted_kappa(a, b, weights="linear") == pytest.approx(4 / 7)
    assert weighted_kappa(a, b, weights="quadratic") == pytest.approx(2 / 3)
    assert weighted_kappa(a, b, weights="quadratic", categories=(1, 2, 3)) == pytest.approx(2 / 3)


def test_quadratic_kappa_equals_the_moment_formula_of_fleiss_and_cohen():
    rng = np.random.default_rng(7)
    a = rng.integers(1, 6, 200)
    b = np.clip(a + rng.integers(-1, 2, 200), 1, 5)
    covariance = np.mean((a - a.mean()) * (b - b.mean()))
    expected = 2 * covariance / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)
    assert weighted_kappa(a.tolist(), b.tolist()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("weights", ["quadratic", "linear", None])
def test_weighted_kappa_matches_scikit_learn(weights):
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is in the dev extra (./workbench setup)")
    rng = np.random.default_rng(5)
    for _ in range(20):
        a = rng.integers(1, 6, 30).tolist()
        b = rng.integers(1, 6, 30).tolist()
        assert weighted_kappa(a, b, weights) == pytest.approx(
            metrics.cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5], weights=weights), abs=1e-12)


def test_weighted_kappa_is_one_for_perfect_agreement_and_negative_for_reversed_ratings():
    assert weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert weighted_kappa([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)


def test_weighted_kappa_explains_bad_input():
    with pytest.raises(UsageError, match="different numbers"):
        weighted_kappa([1, 2], [1])
    with pytest.raises(UsageError, match=r"\[0, 6\]"):
        weighted_kappa([0, 2], [6, 2])
    with pytest.raises(UsageError, match="undefined"):
        weighted_kappa([3, 3], [3, 3])
    with pytest.raises(UsageError, match="weights"):
        weighted_kappa([1, 2], [1, 2], weights="cubic")


def _ratings() -> list[Rating]:
    """Two readers, three cases, methods A and B; A's case means are 3, 4 and 5 (overall)."""
    rows = {("r1", "A"): [3, 4, 5], ("r2", "A"): [3, 4, 5], ("r1", "B"): [2, 2, 3], ("r2", "B"): [2, 3, 3]}
    return [Rating(reader, method, f"case{i}", {"overall": score, "snr": 4})
            for (reader, method), scores in rows.items() for i, score in enumerate(scores)]


def test_method_summary_t_interval_of_case_means():
    rows = {(s.method, s.criterion): s for s in method_summary(_ratings(), interval="t")}
    a = rows[("A", "overall")]
    assert (a.n_cases, a.n_ratings, a.mean) == (3, 6, 4.0)
    # mean 4, sd 1, n 3: t(0.975, 2) = 4.302653; half width 4.302653 / sqrt(3) = 2.484138
    assert a.low == pytest.approx(4 - 2.484138, abs=1e-6) and a.high == pytest.approx(4 + 2.484138, abs=1e-6)
    b = rows[("B", "overall")]
    assert b.mean == pytest.approx((2 + 2.5 + 3) / 3)
    snr = rows[("A", "snr")]
    assert (snr.mean, snr.low, snr.high) == (4.0, 4.0, 4.0)
    assert [(s.method, s.criterion) for s in method_summary(_ratings(), interval="t")] == [
        ("A", "overall"), ("A", "snr"), ("B", "overall"), ("B", "snr")]


def test_method_summary_bootstrap_is_reproducible_and_within_the_case_means():
    ratings = [Rating("r1", "A", f"case{i}", {"overall": int(v)})
               for i, v in enumerate(np.random.default_rng(3).integers(1, 6, 40))]
    first = method_summary(ratings, criteria=["overall"], resamples=4000, seed=11)[0]
    assert method_summary(ratings, criteria=["overall"], resamples=4000, seed=11) == [first]
    t = method_summary(ratings, criteria=["overall"], interval="t")[0]
    assert 1 <= first.low < first.mean < first.high <= 5
    # with 40 cases the percentile bootstrap and the t interval agree to a few hundredths
    assert first.low == pytest.approx(t.low, abs=0.08) and first.high == pytest.approx(t.high, abs=0.08)


def test_method_summary_with_one_case_has_no_interval():
    (only,) = method_summary([Rating("r1", "A", "case0", {"overall": 4})], criteria=["overall"])
    assert (only.n_cases, only.mean, only.low, only.high) == (1, 4.0, None, None)


def test_agreement_pairs_every_reader_on_common_cases():
    ratings = _ratings() + [Rating("r3", "A", "case0", {"overall": 5})]
    pairs, means = agreement(ratings, criteria=["overall"])
    by_pair = {(p.reader_a, p.reader_b): p for p in pairs}
    r1 = [3, 4, 5, 2, 2, 3]
    r2 = [3, 4, 5, 2, 3, 3]
    assert by_pair[("r1", "r2")].n == 6
    assert by_pair[("r1", "r2")].kappa == pytest.approx(weighted_kappa(r1, r2))
    assert by_pair[("r1", "r3")].n == 1 and by_pair[("r1", "r3")].kappa is None
    assert means["overall"] == pytest.approx(by_pair[("r1", "r2")].kappa)


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units, missing values.
KRIPPENDORFF_2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
                     [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_reproduces_the_published_worked_example(level, published):
    """Units rated once (the 12th) are left out; the others count with however many readers rated them."""
    units = list(zip(*KRIPPENDORFF_2011, strict=True))
    assert krippendorff_alpha(units, level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_alpha_edge_cases_and_bad_levels():
    assert krippendorff_alpha([[3, 3], [4, 4, 4], [1, 1]]) == pytest.approx(1.0)
    assert krippendorff_alpha([[2, 2], [2, 2]]) is None  # no variation: nothing to agree about
    assert krippendorff_alpha([[5], [1, None]]) is None  # nothing rated twice
    # two readers who always disagree by the whole scale agree worse than chance
    assert krippendorff_alpha([[1, 5], [5, 1], [1, 5], [5, 1]], "interval") < 0
    with pytest.raises(UsageError, match="unknown level of measurement 'ratio'"):
        krippendorff_alpha([[1, 2]], "ratio")


def test_alpha_by_criterion_takes_each_series_as_a_unit_across_every_reader():
    ratings = [Rating(reader, method, case, {"overall": score, "snr": 3})
               for reader, scores in (("ada", [1, 2, 4]), ("rita", [1, 3, 4]), ("ray", [2, 3, None]))
               for (method, case), score in zip((("ifft", "d1"), ("sense", "d1"), ("sense", "d2")), scores,
                                                strict=True) if score is not None]
    alphas = alpha_by_criterion(ratings, ("overall", "snr"))
    assert alphas["overall"] == pytest.approx(krippendorff_alpha([[1, 1, 2], [2, 3, 3], [4, 4]]))
    assert alphas["snr"] is None
