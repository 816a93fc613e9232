r"""A paired test of two conditions measured on the same units (student vs teacher per seed).

The differences :math:`d_i = a_i - b_i` are tested against 0 twice: by the paired t-test
(``scipy.stats.ttest_rel``; assumes roughly normal differences) and by the Wilcoxon
signed-rank test (``scipy.stats.wilcoxon``; distribution-free, zero differences dropped,
exact for small samples). The effect size is Cohen's :math:`d_z = \bar d / s_d`, the mean
difference over the sample standard deviation of the differences. With :math:`n`
non-zero differences the two-sided Wilcoxon p-value is never below :math:`2 / 2^n`
(0.25 at n = 3, 0.0625 at n = 5).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from landscape.compare.rank_correlation import MIN_PAIRS, finite_pairs


@dataclass(frozen=True)
class PairedTest:
    """Paired t and Wilcoxon signed-rank tests of ``a - b`` against 0 (two-sided).

    Attributes:
        n: Complete pairs (both values finite).
        mean_difference: Mean of ``a - b``.
        effect_size: Cohen's d_z, the mean difference over the differences' sample
            standard deviation; None when that is 0.
        t_statistic, t_p_value: The paired t-test (None when the differences are all equal).
        wilcoxon_statistic, wilcoxon_p_value: The signed-rank test (None when every
            difference is 0).
        note: Why a number is missing, in words.
    """

    n: int
    mean_difference: float | None = None
    effect_size: float | None = None
    t_statistic: float | None = None
    t_p_value: float | None = None
    wilcoxon_statistic: float | None = None
    wilcoxon_p_value: float | None = None
    note: str | None = None


def paired_test(a: Sequence[float | None], b: Sequence[float | None]) -> PairedTest:
    """Test whether ``a`` differs from ``b`` pair by pair (e.g. student vs its teacher).

    Pairs with a missing or non-finite value are left out; with fewer than
    :data:`MIN_PAIRS` left, or differences that are all equal, the undefined numbers are
    None and ``note`` says why.
    """
    xs, ys, _ = finite_pairs(a, b)
    n = len(xs)
    if n < MIN_PAIRS:
        return PairedTest(n, note=f"fewer than {MIN_PAIRS} complete pairs (n={n})")
    differences = xs - ys
    mean = float(np.mean(differences))
    sd = float(np.std(differences, ddof=1))
    if not np.any(differences != 0):
        return PairedTest(n, mean, note="every difference is 0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on small samples; numbers are exact
        wilcoxon = stats.wilcoxon(xs, ys)
        if sd == 0:
            return PairedTest(n, mean, None, None, None, float(wilcoxon.statistic),
                              float(wilcoxon.pvalue),
                              "the differences are all equal: no t-test")  # fmt: skip
        t = stats.ttest_rel(xs, ys)
    return PairedTest(n, mean, mean / sd, float(t.statistic), float(t.pvalue),
                      float(wilcoxon.statistic), float(wilcoxon.pvalue))  # fmt: skip
