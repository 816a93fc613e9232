"""Hutchinson and Hutch++ against the exact trace of dense float64 Hessians."""

from __future__ import annotations

import pytest
import torch

from landscape.curvature.trace import hutchinson_trace, hutchpp_trace, rademacher
from landscape.errors import LandscapeInputError
from landscape.operators.base import DenseOperator

ESTIMATORS = [hutchinson_trace, hutchpp_trace]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=["hutchinson", "hutchpp"])
def test_within_four_standard_errors_of_exact_trace(problem, estimator):
    H = problem.operator()
    result = estimator(H, matvecs=60, seed=0, block_size=20)
    exact = float(torch.trace(problem.dense))
    assert result.stderr > 0
    assert abs(result.estimate - exact) <= 4 * result.stderr
    assert result.matvecs == H.matvecs == 60


def test_hutchpp_is_exact_below_its_sketch_size(low_rank_problem):
    """The Hessian has rank 6; a sketch of 8 columns captures all of it."""
    H = low_rank_problem.operator()
    exact = float(torch.trace(low_rank_problem.dense))
    assert torch.linalg.matrix_rank(low_rank_problem.dense) == 6
    result = hutchpp_trace(H, matvecs=24, seed=3)
    assert result.estimate == pytest.approx(exact, rel=1e-10)
    assert result.stderr < 1e-10 * abs(exact)


def test_hutchinson_standard_error_matches_its_variance():
    """Var(z^T A z) = 2 (||A||_F^2 - sum_i A_ii^2) for Rademacher z."""
    torch.manual_seed(0)
    B = torch.randn(30, 30, dtype=torch.float64)
    A = B + B.T
    variance = 2 * (A.pow(2).sum() - A.diagonal().pow(2).sum())
    result = hutchinson_trace(DenseOperator(A), matvecs=4000, seed=1, block_size=500)
    expected = float(variance.sqrt()) / 4000**0.5
    assert result.stderr == pytest.approx(expected, rel=0.1)


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    torch.manual_seed(0)
    U = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64)).Q
    A = DenseOperator(U @ torch.diag(1.0 / torch.arange(1, 301, dtype=torch.float64) ** 2) @ U.T)
    plain = hutchinson_trace(A, matvecs=30)
    plus = hutchpp_trace(A, matvecs=30)
    assert plus.stderr < plain.stderr / 5


def test_rademacher_entries_are_signs():
    probes = rademacher(1000, 3, torch.Generator().manual_seed(0), torch.float32, "cpu")
    assert set(probes.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(probes.mean())) < 0.1


@pytest.mark.parametrize("estimator, least", [(hutchinson_trace, 1), (hutchpp_trace, 3)])
def test_too_few_probes_is_a_user_error(estimator, least):
    with pytest.raises(LandscapeInputError, match="at least"):
        estimator(DenseOperator(torch.eye(3)), matvecs=least - 1)
