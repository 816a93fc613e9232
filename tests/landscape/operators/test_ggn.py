"""The GGN operator and the residual H - GGN against dense float64 references."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import (
    GGNOperator,
    autograd_output_hessian,
    cross_entropy_output_hessian,
    residual_operator,
)
from landscape.operators.hessian import HessianOperator
from tests.landscape.cases import CASES, dense_hessian, make_float64


def dense_ggn(model, loss_fn, batches) -> torch.Tensor:
    r""":math:`\sum_k (n_k/N) J_k^T \nabla^2_z \ell_k J_k` from ``jacrev`` and ``hessian``."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    total = sum(len(y) for _, y in batches)

    def outputs(theta, x):
        chunks = theta.split([s.numel() for s in shapes])
        tensors = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return functional_call(model, {**buffers, **tensors}, (x,))

    was_training = model.training
    model.eval()
    G = torch.zeros(flat.numel(), flat.numel(), dtype=flat.dtype)
    for x, y in batches:
        z = outputs(flat, x).detach()
        J = jacrev(outputs)(flat, x).reshape(z.numel(), -1)
        H_out = hessian(lambda out, y=y: loss_fn(out, y))(z).reshape(z.numel(), z.numel())
        G += len(y) / total * J.T @ H_out @ J
    model.train(was_training)
    return G


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case_problem(request):
    model, loss_fn, batches = make_float64(request.param)
    return model, loss_fn, batches


def test_ggn_matches_dense_jacobian_product(case_problem):
    model, loss_fn, batches = case_problem
    G = GGNOperator(model, loss_fn, batches)
    torch.testing.assert_close(G.to_dense(), dense_ggn(model, loss_fn, batches), rtol=0, atol=1e-12)


def test_ggn_is_positive_semidefinite(case_problem):
    model, loss_fn, batches = case_problem
    dense = GGNOperator(model, loss_fn, batches).to_dense()
    torch.testing.assert_close(dense, dense.T, rtol=0, atol=1e-14)
    eigenvalues = torch.linalg.eigvalsh(dense)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.abs().max()


def test_residual_is_hessian_minus_ggn(case_problem):
    model, loss_fn, batches = case_problem
    H = HessianOperator(model, loss_fn, batches)
    G = GGNOperator(model, loss_fn, batches)
    R = residual_operator(H, G)
    expected = dense_hessian(model, loss_fn, batches) - dense_ggn(model, loss_fn, batches)
    torch.testing.assert_close(R.to_dense(), expected, rtol=0, atol=1e-12)
    assert H.matvecs == G.matvecs == R.matvecs == R.dim


def test_softmax_regression_hessian_equals_ggn():
    """A model linear in its parameters has no residual: H = GGN exactly."""
    torch.manual_seed(0)
    model = nn.Linear(5, 4).double()
    batches = [
        (torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 4, (9,))),
        (torch.randn(4, 5, dtype=torch.float64), torch.randint(0, 4, (4,))),
    ]
    loss_fn = nn.functional.cross_entropy
    G = GGNOperator(model, loss_fn, batches).to_dense()
    torch.testing.assert_close(G, dense_hessian(model, loss_fn, batches), rtol=0, atol=1e-14)
    assert G.abs().max() > 1e-2  # not trivially zero


def test_closed_form_cross_entropy_equals_autograd():
    torch.manual_seed(1)
    logits = torch.randn(6, 5, 3, dtype=torch.float64)  # class axis 1, one spatial axis
    targets = torch.randint(0, 5, (6, 3))
    U = torch.randn(4, 6, 5, 3, dtype=torch.float64)
    closed = cross_entropy_output_hessian(logits, targets, U)
    generic = autograd_output_hessian(nn.functional.cross_entropy)(logits, targets, U)
    torch.testing.assert_close(closed, generic, rtol=0, atol=1e-14)


def test_auto_falls_back_to_autograd_for_weighted_cross_entropy():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    batches = [(torch.randn(7, 3, dtype=torch.float64), torch.randint(0, 3, (7,)))]
    G = GGNOperator(model, loss_fn, batches)
    assert G.output_hessian_name == "autograd"
    torch.testing.assert_close(G.to_dense(), dense_ggn(model, loss_fn, batches), atol=1e-12, rtol=0)


def test_batch_split_does_not_change_the_ggn():
    model, loss_fn, batches = make_float64(CASES[0])
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    one = GGNOperator(model, loss_fn, [(x, y)]).to_dense()
    many = GGNOperator(model, loss_fn, batches).to_dense()
    torch.testing.assert_close(one, many, rtol=0, atol=1e-14)


def test_train_mode_batchnorm_leaves_model_untouched():
    model, loss_fn, batches = make_float64(next(c for c in CASES if "batchnorm" in c.id))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    G = GGNOperator(model, loss_fn, batches, bn_mode="train")
    dense = G.to_dense()
    assert torch.linalg.eigvalsh(dense).min() >= -1e-10 * dense.abs().max()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training and all(p.grad is None for p in model.parameters())


def test_float32_model_with_float64_operator_matches():
    model, loss_fn, batches = make_float64(CASES[0])
    reference = GGNOperator(model, loss_fn, batches).to_dense()
    G = GGNOperator(model.float(), loss_fn, batches, dtype=torch.float64)
    torch.testing.assert_close(G.to_dense(), reference, rtol=1e-6, atol=1e-7)


def test_bad_options_are_input_errors():
    model, loss_fn, batches = make_float64(CASES[0])
    with pytest.raises(LandscapeInputError, match="output_hessian"):
        GGNOperator(model, loss_fn, batches, output_hessian="newton")
    with pytest.raises(LandscapeInputError, match="bn_mode"):
        GGNOperator(model, loss_fn, batches, bn_mode="frozen")
    H = HessianOperator(model, loss_fn, batches)
    G = GGNOperator(model, loss_fn, batches[:1])
    with pytest.raises(LandscapeInputError, match="same parameters and data"):
        residual_operator(H, G)


def test_gradient_is_the_mean_loss_gradient(case_problem):
    model, loss_fn, batches = case_problem
    expected = HessianOperator(model, loss_fn, batches).gradient()
    G = GGNOperator(model, loss_fn, batches)
    torch.testing.assert_close(G.gradient(), expected, rtol=1e-10, atol=1e-14)
    assert G.matvecs == 0


def test_measure_ggn_curvature_runs_the_hessian_solvers_on_the_ggn():
    model, loss_fn, batches = make_float64(CASES[0])
    dense = torch.linalg.eigvalsh(dense_ggn(model, loss_fn, batches))
    request = CurvatureRequest(top_k=3, tol=1e-10, trace=True, trace_matvecs=9)
    result = measure_curvature(GGNOperator(model, loss_fn, batches), request)
    torch.testing.assert_close(result.eigen.eigenvalues, dense.flip(0)[:3])
    assert result.hvp == "ggn/cross_entropy" and result.trace.matvecs == 9
    assert result.matvecs == result.eigen.matvecs + 9
    with pytest.raises(LandscapeInputError, match="pyhessian"):
        measure_curvature(
            GGNOperator(model, loss_fn, batches), CurvatureRequest(engine="pyhessian")
        )
