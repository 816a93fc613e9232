"""Lanczos and power iteration against the dense float64 Hessian's eigendecomposition."""

from __future__ import annotations

import pytest
import torch

from landscape.curvature.eigen import lanczos, lanczos_extremes, power_iteration
from landscape.errors import LandscapeInputError
from landscape.operators.base import DenseOperator


def assert_eigenvectors_match(dense, values, vectors, rtol=1e-6):
    """Each vector lies in the dense eigenspace of its value (``up to sign`` when simple)."""
    exact, basis = torch.linalg.eigh(dense)
    scale = exact.abs().max()
    for value, vector in zip(values, vectors.T, strict=True):
        space = basis[:, (exact - value).abs() <= 1e-8 * scale]
        assert space.shape[1] >= 1
        assert float((space.T @ vector).norm()) == pytest.approx(1.0, abs=rtol)


@pytest.mark.parametrize("block_size", [1, 3])
@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_matches_dense_eigenpairs(problem, which, block_size):
    H = problem.operator()
    k = 3
    exact = torch.linalg.eigvalsh(problem.dense)
    expected = exact.flip(0)[:k] if which == "largest" else exact[:k]
    # A Krylov space holds one copy of a repeated eigenvalue per start vector.
    multiplicity = max(int(((exact - e).abs() <= 1e-8 * exact.abs().max()).sum()) for e in expected)
    block_size = max(block_size, min(multiplicity, k))
    result = lanczos(H, k=k, which=which, tol=1e-10, block_size=block_size, seed=1)
    torch.testing.assert_close(
        result.eigenvalues, expected, rtol=1e-6, atol=1e-10 * exact.abs().max()
    )
    assert_eigenvectors_match(problem.dense, result.eigenvalues, result.eigenvectors)
    residuals = (
        problem.dense @ result.eigenvectors - result.eigenvectors * result.eigenvalues
    ).norm(dim=0)
    torch.testing.assert_close(result.residuals, residuals, rtol=1e-4, atol=1e-10)
    assert result.converged and result.engine == "lanczos"
    assert result.matvecs == H.matvecs <= H.dim + block_size - 1


def test_lanczos_tolerance_bounds_the_relative_error():
    torch.manual_seed(0)
    spectrum = torch.cat([torch.tensor([10.0, 9.0, 8.5]), torch.rand(400) * 2 - 0.5]).double()
    basis, _ = torch.linalg.qr(torch.randn(403, 403, dtype=torch.float64))
    A = DenseOperator(basis @ torch.diag(spectrum) @ basis.T)
    for tol in (1e-2, 1e-3, 1e-5):
        result = lanczos(A, k=3, tol=tol, seed=3)
        error = ((result.eigenvalues - spectrum[:3]).abs() / spectrum[:3]).max()
        assert result.converged and float(error) <= tol
        assert result.matvecs < 100


def test_lanczos_finds_repeated_eigenvalues_with_blocks():
    A = DenseOperator(torch.diag(torch.tensor([5.0, 5.0, 3.0] + [1.0] * 30, dtype=torch.float64)))
    result = lanczos(A, k=2, tol=1e-10, block_size=2)
    assert result.eigenvalues.tolist() == pytest.approx([5.0, 5.0])


def test_lanczos_start_vector_is_used():
    A = DenseOperator(torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64)))
    start = torch.zeros(100, dtype=torch.float64)
    start[-1] = 1.0
    result = lanczos(A, k=1, tol=1e-10, start=start)
    assert result.eigenvalues.tolist() == [100.0] and result.matvecs == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k=0"),
        ({"k": 10**6}, "dimension"),
        ({"which": "both"}, "which 'both'"),
        ({"max_matvecs": 1}, "must exceed"),
    ],
)
def test_lanczos_bad_arguments(problem, kwargs, message):
    with pytest.raises(LandscapeInputError, match=message):
        lanczos(problem.operator(), **kwargs)


def test_lanczos_extremes_match_the_dense_ends_of_the_spectrum(problem):
    """Both ends from one Krylov space, each within its residual bound of the dense value."""
    exact = torch.linalg.eigvalsh(problem.dense)
    scale = float(exact.abs().max())
    H = problem.operator()
    top, bottom = lanczos_extremes(H, tol=1e-9, seed=1)
    assert top.converged and bottom.converged and top.matvecs == bottom.matvecs == H.matvecs
    assert float(top.eigenvalues[0]) == pytest.approx(float(exact[-1]), abs=1e-8 * scale)
    assert float(bottom.eigenvalues[0]) == pytest.approx(float(exact[0]), abs=1e-8 * scale)
    for result in (top, bottom):
        vector, value = result.eigenvectors[:, 0], result.eigenvalues[0]
        residual = float((problem.dense @ vector - value * vector).norm())
        assert residual == pytest.approx(float(result.residuals[0]), rel=1e-4, abs=1e-10)


def test_lanczos_extremes_cost_the_longer_of_two_runs_and_give_its_values():
    """Two runs from one seed grow the same space: one shared run stops at the later one."""
    torch.manual_seed(0)
    spectrum = torch.cat([torch.tensor([10.0, 9.0]), torch.rand(300) * 2 - 0.5]).double()
    basis, _ = torch.linalg.qr(torch.randn(302, 302, dtype=torch.float64))
    A = DenseOperator(basis @ torch.diag(spectrum) @ basis.T)
    for tol in (1e-2, 1e-3, 1e-5):
        top, bottom = lanczos_extremes(A, tol=tol, seed=3)
        high = lanczos(A, k=1, tol=tol, seed=3)
        scale = float(high.eigenvalues[0])
        low = lanczos(A, k=1, which="smallest", tol=tol, atol=tol * scale, seed=3)
        assert top.converged and bottom.converged
        assert top.matvecs <= max(high.matvecs, low.matvecs) + 1 < high.matvecs + low.matvecs
        assert abs(float(top.eigenvalues[0]) - 10.0) <= tol * 10.0
        assert abs(float(bottom.eigenvalues[0]) - float(spectrum.min())) <= tol * 10.0


def test_lanczos_extremes_from_both_vectors_takes_three_products():
    """A start summing the two extreme eigenvectors: its space holds both after 2 products."""
    A = DenseOperator(torch.diag(torch.arange(-3.0, 97.0, dtype=torch.float64)))
    start = torch.zeros(100, 2, dtype=torch.float64)
    start[-1, 0] = start[0, 1] = 1.0
    top, bottom = lanczos_extremes(A, tol=1e-10, start=start)
    assert [float(top.eigenvalues[0]), float(bottom.eigenvalues[0])] == pytest.approx([96, -3])
    assert top.matvecs == 3  # the basis must exceed the two pairs it certifies
    with pytest.raises(LandscapeInputError, match="at least 2"):
        lanczos_extremes(A, max_matvecs=1)


def test_power_iteration_matches_largest_magnitude(problem):
    H = problem.operator()
    result = power_iteration(H, k=1, tol=1e-14, max_matvecs=3000, seed=0)
    exact = torch.linalg.eigvalsh(problem.dense)
    target = exact[exact.abs().argmax()]
    assert float(result.eigenvalues[0]) == pytest.approx(float(target), rel=1e-6)
    residual = (
        problem.dense @ result.eigenvectors[:, 0]
        - result.eigenvalues[0] * result.eigenvectors[:, 0]
    ).norm()
    assert float(result.residuals[0]) == pytest.approx(float(residual), rel=1e-6, abs=1e-12)
    assert result.matvecs == H.matvecs and result.engine == "power"


def test_power_iteration_deflates():
    A = DenseOperator(torch.diag(torch.tensor([4.0, -3.0, 1.0, 0.1], dtype=torch.float64)))
    result = power_iteration(A, k=3, tol=1e-14, max_matvecs=15000)
    assert result.eigenvalues.tolist() == pytest.approx([4.0, -3.0, 1.0], rel=1e-6)
    assert result.converged


def test_power_iteration_stops_early_below_the_top_eigenvalue():
    """PyHessian's relative-change rule stops before convergence when lambda2/lambda1 ~ 0.9."""
    A = DenseOperator(torch.diag(torch.tensor([1.0, 0.9] + [0.01] * 50, dtype=torch.float64)))
    result = power_iteration(A, k=1, tol=1e-3, seed=0)
    assert result.converged and 0.9 < float(result.eigenvalues[0]) < 1.0 - 1e-3
