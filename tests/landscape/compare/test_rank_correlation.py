"""Kendall's tau, its bootstrap interval and Jiang et al.'s granulated tau, against references."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from landscape.compare.rank_correlation import granulated_tau, kendall_tau, tau_with_interval
from landscape.errors import LandscapeInputError


def _tau_b_by_pairs(x, y):
    """Kendall's tau-b by counting every pair (the textbook formula, a second implementation)."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        ties_x += sx == 0
        ties_y += sy == 0
        concordant += sx * sy > 0
        discordant += sx * sy < 0
    pairs = len(x) * (len(x) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y))


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(1)  # rounded: ties on both sides
    y = (0.5 * x + rng.normal(size=n)).round(1)
    return x, y


def test_tau_equals_scipy_and_a_pair_count_with_ties():
    x, y = _data()
    tau, p_value, note = kendall_tau(list(x), list(y))
    reference = stats.kendalltau(x, y)
    assert note is None
    assert tau == pytest.approx(reference.statistic, abs=1e-12)
    assert p_value == pytest.approx(reference.pvalue, abs=1e-12)
    assert tau == pytest.approx(_tau_b_by_pairs(x, y), abs=1e-12)


def test_missing_and_non_finite_pairs_are_left_out():
    x, y = _data(12)
    holes_x = [None, *x[1:5], math.nan, *x[6:]]
    holes_y = [*y[:8], math.inf, *y[9:]]
    kept = [i for i in range(12) if i not in (0, 5, 8)]
    result = tau_with_interval(holes_x, holes_y, resamples=50)
    assert result.n == 9
    assert result.tau == pytest.approx(stats.kendalltau(x[kept], y[kept]).statistic, abs=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        ([1.0, 2.0], [1.0, 3.0], "fewer than 3 complete pairs (n=2)"),
        ([1.0, None, 3.0, math.nan], [1.0, 2.0, 3.0, 4.0], "fewer than 3 complete pairs (n=2)"),
        ([2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], "the measure is constant"),
        ([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], "the target is constant"),
    ],
)
def test_degenerate_inputs_give_none_and_say_why(x, y, words):
    result = tau_with_interval(x, y)
    assert result.tau is None and result.ci_low is None and result.p_value is None
    assert words in result.note


def test_bad_arguments_are_one_exception_type():
    with pytest.raises(LandscapeInputError, match="one value per pair"):
        kendall_tau([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(LandscapeInputError, match="confidence"):
        tau_with_interval([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], confidence=1.5)
    with pytest.raises(LandscapeInputError, match="one label per pair"):
        tau_with_interval([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], clusters=["a"])


def test_bootstrap_interval_contains_tau_and_is_reproducible_with_the_seed():
    x, y = _data()
    first = tau_with_interval(x, y, resamples=400, seed=3)
    again = tau_with_interval(x, y, resamples=400, seed=3)
    other = tau_with_interval(x, y, resamples=400, seed=4)
    assert first == again
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert first.ci_low < first.tau < first.ci_high
    assert first.resamples == 400 and first.confidence == 0.95
    # the percentile interval, recomputed with the same draws
    rng = np.random.default_rng(3)
    taus = []
    for _ in range(400):
        index = rng.integers(len(x), size=len(x))
        taus.append(stats.kendalltau(x[index], y[index]).statistic)
    low, high = np.quantile(taus, [0.025, 0.975])
    assert (first.ci_low, first.ci_high) == pytest.approx((low, high), abs=1e-12)


def test_cluster_bootstrap_resamples_whole_clusters():
    x, y = _data(12)
    clusters = [i // 3 for i in range(12)]  # four clusters of three
    result = tau_with_interval(x, y, clusters=clusters, resamples=300, seed=1)
    rng = np.random.default_rng(1)
    taus = []
    for _ in range(300):
        chosen = rng.integers(4, size=4)
        index = np.concatenate([np.arange(3 * c, 3 * c + 3) for c in chosen])
        a, b = x[index], y[index]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            taus.append(stats.kendalltau(a, b).statistic)
    assert result.resamples == len(taus)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        tuple(np.quantile(taus, [0.025, 0.975])), abs=1e-12
    )
    # one cluster per pair is the plain bootstrap
    single = tau_with_interval(x, y, clusters=[f"c{i}" for i in range(12)], resamples=50)
    assert single == tau_with_interval(x, y, resamples=50)


def _design():
    """Two hyper-parameters (a in {0, 1}, b in {0, 1, 2}), one run each; c never varies."""
    table = [(0, 0, 1, 1), (0, 1, 2, 3), (0, 2, 3, 2), (1, 0, 4, 0), (1, 1, 5, 5), (1, 2, 6, 6)]
    return [{"a": a, "b": b, "c": "same", "x": x, "y": y} for a, b, x, y in table]


def test_granulated_tau_equals_a_hand_computation():
    # a varies within b's groups: b=0: x 1->4, y 1->0 (-1); b=1: +1; b=2: +1 -> 1/3.
    # b varies within a's groups: a=0: y 1,3,2 over x 1,2,3 -> (2 - 1)/3 = 1/3;
    # a=1: y 0,5,6 -> 1. Mean 2/3. Granulated: (1/3 + 2/3) / 2 = 1/2.
    result = granulated_tau(_design(), "x", "y", ["a", "b", "c"])
    assert result.per_hyperparameter == {
        "a": {"tau": pytest.approx(1 / 3), "groups": 3},
        "b": {"tau": pytest.approx(2 / 3), "groups": 2},
    }
    assert result.value == pytest.approx(1 / 2)
    plain, _, _ = kendall_tau([r["x"] for r in _design()], [r["y"] for r in _design()])
    assert plain == pytest.approx(stats.kendalltau([1, 2, 3, 4, 5, 6], [1, 3, 2, 0, 5, 6])[0])
    assert plain != pytest.approx(result.value)


def test_granulated_tau_holds_the_fixed_columns_and_skips_undefined_groups():
    rows = [r | {"seed": 0} for r in _design()]
    rows += [r | {"seed": 1, "y": 7.0} for r in _design()]  # seed 1: target constant
    result = granulated_tau(rows, "x", "y", ["a", "b"], fixed=["seed"])
    assert result.per_hyperparameter["a"]["groups"] == 3  # seed 1's groups are skipped
    assert result.value == pytest.approx(1 / 2)
    nothing = granulated_tau(_design(), "x", "y", ["c"])
    assert nothing.value is None and "no hyper-parameter varies" in nothing.note
    flat = granulated_tau([r | {"y": 1.0} for r in _design()], "x", "y", ["a", "b"])
    assert flat.value is None and "undefined in every group" in flat.note
