"""The paired t and Wilcoxon signed-rank tests of student against teacher, against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from landscape.compare.paired_test import paired_test


def test_paired_test_equals_scipy_on_the_same_numbers():
    rng = np.random.default_rng(0)
    teacher = rng.normal(0.9, 0.02, size=8)
    student = teacher + rng.normal(0.01, 0.01, size=8)
    result = paired_test(list(student), list(teacher))
    t = stats.ttest_rel(student, teacher)
    w = stats.wilcoxon(student, teacher)
    differences = student - teacher
    assert result.n == 8 and result.note is None
    assert result.t_statistic == pytest.approx(t.statistic, rel=1e-12)
    assert result.t_p_value == pytest.approx(t.pvalue, rel=1e-12)
    assert result.wilcoxon_statistic == w.statistic
    assert result.wilcoxon_p_value == pytest.approx(w.pvalue, rel=1e-12)
    assert result.mean_difference == pytest.approx(differences.mean(), rel=1e-12)
    assert result.effect_size == pytest.approx(
        differences.mean() / differences.std(ddof=1), rel=1e-12
    )


def test_three_seeds_by_hand():
    # differences +0.02, +0.01, +0.03: t = 0.02 / (0.01 / sqrt 3) on 2 degrees of freedom;
    # Wilcoxon: all signs positive, the smallest exact two-sided p at n = 3, 2 / 2^3.
    result = paired_test([0.92, 0.91, 0.93], [0.90, 0.90, 0.90])
    assert result.effect_size == pytest.approx(2.0)
    assert result.t_statistic == pytest.approx(2 * math.sqrt(3))
    assert result.t_p_value == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))
    assert result.wilcoxon_p_value == pytest.approx(0.25)


def test_degenerate_inputs_say_why():
    few = paired_test([1.0, 2.0, None], [0.5, 1.0, 1.0])
    assert few.n == 2 and few.t_p_value is None and "fewer than 3" in few.note
    zero = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert zero.mean_difference == 0 and zero.wilcoxon_p_value is None
    assert zero.note == "every difference is 0"
    equal = paired_test([2.0, 3.0, 4.0, math.nan], [1.0, 2.0, 3.0, 0.0])
    assert equal.n == 3 and equal.mean_difference == pytest.approx(1.0)
    assert equal.t_p_value is None and equal.effect_size is None
    assert equal.wilcoxon_p_value == pytest.approx(0.25) and "no t-test" in equal.note
