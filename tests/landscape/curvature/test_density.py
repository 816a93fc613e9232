"""Stochastic Lanczos quadrature against exact moments of dense float64 Hessians."""

from __future__ import annotations

import pytest
import torch

from landscape.curvature.density import gaussian_density, slq
from landscape.curvature.trace import rademacher
from landscape.operators.base import DenseOperator


def test_quadrature_reproduces_each_probes_moments(problem):
    """Gauss quadrature with m nodes is exact for v^T H^k v, k <= 2m - 1."""
    H = problem.operator()
    probes = rademacher(H.dim, 3, torch.Generator().manual_seed(0), H.dtype, H.device)
    quadrature = slq(H, steps=6, vectors=probes)
    unit = probes / probes.norm(dim=0)
    for power in (1, 2, 3):
        exact = (unit * (torch.linalg.matrix_power(problem.dense, power) @ unit)).sum(dim=0)
        torch.testing.assert_close(quadrature.moment(power), exact, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(quadrature.weights.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert quadrature.matvecs == H.matvecs == 18


@pytest.mark.slow
def test_moments_estimate_normalised_traces(problem):
    """Over many probes, the moments estimate tr(H)/n and tr(H^2)/n within 4 SE."""
    H = problem.operator()
    quadrature = slq(H, probes=40, steps=8, seed=1, block_size=40)
    n = H.dim
    for power in (1, 2):
        samples = quadrature.moment(power)
        exact = float(torch.trace(torch.linalg.matrix_power(problem.dense, power))) / n
        stderr = float(samples.std()) / len(samples) ** 0.5
        assert abs(float(samples.mean()) - exact) <= 4 * stderr


def test_nodes_are_exact_eigenvalues_when_steps_reach_the_dimension(problem):
    H = problem.operator()
    quadrature = slq(H, steps=H.dim, seed=2)
    exact = torch.linalg.eigvalsh(problem.dense)
    nodes = quadrature.nodes[0][quadrature.weights[0] > 1e-12]
    assert float(nodes.max()) == pytest.approx(float(exact.max()), rel=1e-8)
    assert float(nodes.min()) == pytest.approx(float(exact.min()), rel=1e-6, abs=1e-8)


def test_krylov_space_closing_early_is_handled():
    A = DenseOperator(torch.diag(torch.tensor([2.0, 2.0, 5.0, 5.0], dtype=torch.float64)))
    quadrature = slq(A, steps=4, seed=0)
    kept = quadrature.weights[0] > 0
    assert int(kept.sum()) == 2
    assert sorted(quadrature.nodes[0][kept].tolist()) == pytest.approx([2.0, 5.0])
    assert float(quadrature.moment(1)[0]) == pytest.approx(3.5)


def test_gaussian_density_integrates_to_one():
    A = DenseOperator(torch.diag(torch.linspace(-1, 3, 50, dtype=torch.float64)))
    quadrature = slq(A, probes=2, steps=10)
    grid = torch.linspace(-3, 5, 4001, dtype=torch.float64)
    density = gaussian_density(quadrature, grid, sigma=0.1)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-6)
    assert (density >= 0).all()
