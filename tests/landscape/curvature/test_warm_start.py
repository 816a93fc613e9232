"""Warm starts: from a nearby operator's eigenvectors, fewer products and the same values.

References are float64 dense eigendecompositions (``torch.linalg.eigh``) of dense Hessians
(``tests/landscape/cases.py``); a warm start must meet the same tolerance as a cold one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature.eigen import lanczos, power_iteration
from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.curvature.model import model_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.base import DenseOperator
from tests.landscape.cases import dense_hessian


def _spectrum_matrix(n: int = 300, seed: int = 0) -> torch.Tensor:
    """A symmetric float64 matrix with a top gap and a bulk, like a trained network's Hessian."""
    generator = torch.Generator().manual_seed(seed)
    top = torch.tensor([12.0, 7.0, 6.5], dtype=torch.float64)
    bulk = torch.rand(n - 3, generator=generator, dtype=torch.float64) * 2 - 0.3
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return basis @ torch.diag(torch.cat([top, bulk])) @ basis.T


def test_warm_start_from_exact_eigenvector_takes_two_products(problem):
    exact, basis = torch.linalg.eigh(problem.dense)
    cold = lanczos(problem.operator(), k=1, tol=1e-8, seed=0)
    warm = lanczos(problem.operator(), k=1, tol=1e-8, seed=0, start=basis[:, -1])
    assert warm.converged and cold.converged
    assert warm.matvecs == 2 < cold.matvecs
    scale = float(exact.abs().max())
    assert float(warm.eigenvalues[0]) == pytest.approx(float(exact[-1]), abs=1e-8 * scale)


def test_warm_start_of_k_pairs_from_their_vectors():
    A = _spectrum_matrix()
    exact, basis = torch.linalg.eigh(A)
    cold = lanczos(DenseOperator(A), k=3, tol=1e-6, seed=0)
    warm = lanczos(DenseOperator(A), k=3, tol=1e-6, seed=0, start=basis[:, -3:])
    assert warm.converged and cold.converged
    assert warm.matvecs <= 4 < cold.matvecs
    torch.testing.assert_close(warm.eigenvalues, exact.flip(0)[:3], rtol=1e-6, atol=0)


def test_warm_start_on_a_perturbed_operator_converges_sooner_to_tol():
    """The previous step's vectors on a slightly changed matrix: fewer products, same tol."""
    A = _spectrum_matrix()
    generator = torch.Generator().manual_seed(1)
    E = torch.randn(A.shape, generator=generator, dtype=torch.float64)
    B = A + 0.01 * (E + E.T) / 2
    previous = lanczos(DenseOperator(A), k=1, tol=1e-3, seed=0)
    cold = lanczos(DenseOperator(B), k=1, tol=1e-3, seed=0)
    warm = lanczos(DenseOperator(B), k=1, tol=1e-3, seed=0, start=previous.eigenvectors)
    top = float(torch.linalg.eigvalsh(B)[-1])
    for result in (cold, warm):
        assert result.converged
        assert abs(float(result.eigenvalues[0]) - top) <= 1e-3 * top
    assert 2 * warm.matvecs <= cold.matvecs


def test_power_iteration_warm_start():
    A = _spectrum_matrix()
    exact, basis = torch.linalg.eigh(A)
    cold = power_iteration(DenseOperator(A), k=1, tol=1e-8, seed=0)
    warm = power_iteration(DenseOperator(A), k=1, tol=1e-8, seed=0, start=basis[:, -1:])
    assert warm.converged and warm.matvecs == 2 < cold.matvecs
    assert float(warm.eigenvalues[0]) == pytest.approx(float(exact[-1]), rel=1e-10)


def test_measure_and_model_curvature_pass_the_start_and_return_ritz_vectors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = [(torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,)))]
    dense = dense_hessian(model, nn.functional.cross_entropy, data)
    exact = torch.linalg.eigvalsh(dense)
    cold = model_curvature(model, nn.functional.cross_entropy, data, top_k=2, tol=1e-6)
    vectors = cold.eigen.eigenvectors
    assert vectors.shape == (dense.shape[0], 2)
    residuals = (dense @ vectors - vectors * cold.eigen.eigenvalues).norm(dim=0)
    torch.testing.assert_close(residuals, cold.eigen.residuals, rtol=1e-4, atol=1e-12)
    warm = model_curvature(model, nn.functional.cross_entropy, data, top_k=2, tol=1e-6,
                           start=vectors)  # fmt: skip
    assert warm.eigen.converged and warm.matvecs < cold.matvecs
    torch.testing.assert_close(warm.eigen.eigenvalues, exact.flip(0)[:2], rtol=1e-6, atol=0)
    again = measure_curvature(DenseOperator(dense), CurvatureRequest(top_k=2, tol=1e-6),
                              start=vectors)  # fmt: skip
    assert again.matvecs <= 3


@pytest.mark.parametrize(
    "start, message",
    [
        (torch.zeros(5, dtype=torch.float64), "start: a column is zero"),
        (torch.ones(4, dtype=torch.float64), "start: shape (4,) does not fit"),
        (torch.ones(5, 2, 1, dtype=torch.float64), "start: shape (5, 2, 1)"),
        (torch.full((5,), float("nan"), dtype=torch.float64), "start: holds NaN or inf"),
        ([1.0] * 5, "start: a list"),
    ],
)
@pytest.mark.parametrize("solver", [lanczos, power_iteration])
def test_bad_start_is_refused_in_one_line(solver, start, message):
    A = DenseOperator(torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)))
    with pytest.raises(LandscapeInputError) as err:
        solver(A, k=1, start=start)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_pyhessian_engine_refuses_a_start():
    A = DenseOperator(torch.eye(3, dtype=torch.float64))
    with pytest.raises(LandscapeInputError, match="pyhessian engine takes no start"):
        measure_curvature(A, CurvatureRequest(engine="pyhessian"), start=torch.ones(3))
