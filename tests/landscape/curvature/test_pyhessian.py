"""The pyhessian package, run through landscape.curvature.pyhessian, against flatscape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature.eigen import lanczos
from landscape.curvature.pyhessian import pyhessian_density, pyhessian_eigenvalues, pyhessian_trace
from landscape.operators.hessian import HessianOperator


def test_top_eigenvalue_agrees_with_lanczos_within_half_a_percent(problem):
    """At PyHessian's default tol=1e-3 the MLP case stops 0.57% low (lambda2/lambda1 ~ 0.9,
    see test_power_iteration_stops_early_below_the_top_eigenvalue); 1e-4 suffices."""
    H = problem.operator()
    ours = lanczos(H, k=1, tol=1e-3)
    theirs = pyhessian_eigenvalues(problem.model, problem.loss_fn, problem.batches, k=1, tol=1e-4)
    exact = torch.linalg.eigvalsh(problem.dense)
    if exact[-1] < exact.abs().max():  # power iteration finds the largest magnitude
        pytest.skip("the most negative eigenvalue dominates")
    assert float(theirs.eigenvalues[0]) == pytest.approx(float(ours.eigenvalues[0]), rel=5e-3)


def test_converged_pyhessian_matches_dense_top_eigenpairs(problem):
    exact = torch.linalg.eigvalsh(problem.dense)
    by_magnitude = exact[exact.abs().argsort(descending=True)]
    result = pyhessian_eigenvalues(
        problem.model, problem.loss_fn, problem.batches, k=2, tol=1e-12, max_iter=3000
    )
    # PyHessian normalises by (norm + 1e-6), which biases its values by -2e-6 relative.
    torch.testing.assert_close(result.eigenvalues, by_magnitude[:2], rtol=1e-5, atol=1e-9)
    residuals = problem.dense @ result.eigenvectors - result.eigenvectors * result.eigenvalues
    torch.testing.assert_close(result.residuals, residuals.norm(dim=0), rtol=1e-5, atol=1e-8)
    assert result.engine == "pyhessian" and result.matvecs > 2


def test_users_model_rng_and_torch_are_left_alone(problem):
    modes = [m.training for m in problem.model.modules()]
    rng, eig = torch.get_rng_state(), torch.eig
    pyhessian_eigenvalues(problem.model, problem.loss_fn, problem.batches, k=1)
    pyhessian_trace(problem.model, problem.loss_fn, problem.batches, matvecs=3)
    assert [m.training for m in problem.model.modules()] == modes
    assert all(p.grad is None for p in problem.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_default_dtype() == torch.float32
    assert torch.eig is eig


@pytest.mark.slow
def test_trace_runs_every_probe_even_when_negative():
    """PyHessian alone stops after two probes when the running mean is negative."""
    torch.manual_seed(0)
    model = nn.Linear(6, 2).double()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)

    def negative_mse(outputs, targets):
        return -nn.functional.mse_loss(outputs, targets)

    result = pyhessian_trace(model, negative_mse, [(x, y)], matvecs=40, seed=1)
    exact = float(torch.trace(HessianOperator(model, negative_mse, [(x, y)]).to_dense()))
    assert exact < 0 and result.matvecs == 40
    assert abs(result.estimate - exact) <= 4 * result.stderr


def test_density_runs_without_torch_eig(problem):
    quadrature = pyhessian_density(problem.model, problem.loss_fn, problem.batches, steps=6)
    exact = torch.linalg.eigvalsh(problem.dense)
    assert quadrature.nodes.shape == (1, 6) and quadrature.matvecs == 6
    assert float(quadrature.weights.sum()) == pytest.approx(1.0, abs=1e-8)
    slack = 1e-4 * float(exact.abs().max())  # PyHessian normalises by (norm + 1e-6)
    assert exact[0] - slack <= quadrature.nodes.min() <= quadrature.nodes.max() <= exact[-1] + slack
