"""HessianOperator against dense float64 Hessians from ``torch.func.hessian``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.operators.hessian import HessianOperator


@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse", "auto"])
def test_matmat_matches_dense_hessian(problem, hvp):
    H = problem.operator(hvp=hvp)
    V = torch.randn(H.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(H.matmat(V), problem.dense @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H.matvec(V[:, 0]), problem.dense @ V[:, 0], rtol=1e-10, atol=1e-12)
    if hvp == "auto":  # the first product timed both engines and kept the faster
        assert H.hvp == min(H.hvp_seconds, key=H.hvp_seconds.get)
        assert set(H.hvp_seconds) == {"double_backward", "forward_over_reverse"}
        assert H.matvecs == 3 + 3 + 1  # both trial products are counted
    else:
        assert H.hvp == hvp and H.matvecs == 3 + 1


def test_to_dense_and_scipy_view(problem):
    H = problem.operator()
    torch.testing.assert_close(H.to_dense(), problem.dense, rtol=1e-10, atol=1e-12)
    x = np.random.default_rng(0).standard_normal(H.dim)
    np.testing.assert_allclose(H.to_scipy() @ x, problem.dense.numpy() @ x, rtol=1e-9, atol=1e-12)


def test_counts_products_and_reports_progress(problem):
    H = problem.operator()
    seen = []
    H.progress = seen.append
    H.matmat(torch.zeros(H.dim, 4, dtype=torch.float64))
    H.matvec(torch.zeros(H.dim, dtype=torch.float64))
    assert H.matvecs == 5 and seen == [4, 1]


def test_model_left_untouched(problem):
    modes = [m.training for m in problem.model.modules()]
    state = {k: v.clone() for k, v in problem.model.state_dict().items()}
    H = problem.operator(bn_mode="train")
    H.matvec(torch.ones(H.dim, dtype=torch.float64))
    assert [m.training for m in problem.model.modules()] == modes
    assert all(p.grad is None for p in problem.model.parameters())
    for key, value in problem.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_mean_loss_is_size_weighted(problem):
    H = problem.operator()
    total = sum(len(y) for _, y in problem.batches)
    with torch.no_grad():
        expected = sum(
            len(y) / total * float(problem.loss_fn(problem.model.eval()(x), y))
            for x, y in problem.batches
        )
    assert math.isclose(H.loss, expected, rel_tol=1e-12)


def test_parameter_subset_is_a_principal_block():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,)))]
    full = HessianOperator(model, nn.functional.cross_entropy, batches).to_dense()
    last = HessianOperator(model, nn.functional.cross_entropy, batches, params=["2.weight"])
    by_tensor = HessianOperator(
        model, nn.functional.cross_entropy, batches, params=[model[2].weight]
    )
    start = 3 * 4 + 4
    torch.testing.assert_close(last.to_dense(), full[start : start + 8, start : start + 8])
    torch.testing.assert_close(by_tensor.to_dense(), last.to_dense())


def test_float64_copy_leaves_float32_model_alone():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    H = HessianOperator(model, nn.functional.cross_entropy, [(x, y)], dtype=torch.float64)
    assert H.matvec(torch.ones(H.dim, dtype=torch.float64)).dtype == torch.float64
    assert model.weight.dtype == torch.float32 and H.model is not model


def test_batchnorm_train_mode_uses_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    H_eval = HessianOperator(model, nn.functional.cross_entropy, [(x, y)]).to_dense()
    H_train = HessianOperator(model, nn.functional.cross_entropy, [(x, y)], bn_mode="train")
    linear, norm, head = model

    def loss_of_first_weight(w):  # batch statistics, no running-statistics update
        z = nn.functional.linear(x, w, linear.bias)
        z = nn.functional.batch_norm(z, None, None, norm.weight, norm.bias, training=True)
        return nn.functional.cross_entropy(head(z), y)

    dense_train = torch.func.hessian(loss_of_first_weight)(linear.weight.detach())
    torch.testing.assert_close(H_train.to_dense()[:12, :12], dense_train.reshape(12, 12))
    assert not torch.allclose(H_train.to_dense(), H_eval)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hvp": "magic"}, "hvp 'magic'"),
        ({"bn_mode": "frozen"}, "bn_mode 'frozen'"),
        ({"params": ["nope"]}, "'nope' is not a parameter"),
        ({"hvp": "forward_over_reverse", "bn_mode": "train"}, "BatchNorm in train mode"),
    ],
)
def test_bad_options_raise_one_clear_error(kwargs, message):
    model = nn.Linear(2, 2)
    batches = [(torch.randn(3, 2), torch.randint(0, 2, (3,)))]
    with pytest.raises(LandscapeInputError, match=message):
        HessianOperator(model, nn.functional.cross_entropy, batches, **kwargs)


@pytest.mark.parametrize("batches", [1, 2])
def test_non_finite_loss_is_a_user_error(batches):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    data = [(torch.randn(3, 2), torch.randint(0, 2, (3,)))] * batches
    with pytest.raises(LandscapeInputError, match="loss at these weights is nan"):
        HessianOperator(model, nn.functional.cross_entropy, data)


def test_no_batches_is_a_user_error():
    with pytest.raises(LandscapeInputError, match="at least one"):
        HessianOperator(nn.Linear(2, 2), nn.functional.cross_entropy, [])


def test_gradient_matches_autograd_of_the_mean_loss(problem):
    H = problem.operator()
    total = sum(len(y) for _, y in problem.batches)
    model = problem.model.eval()
    loss = sum(len(y) / total * problem.loss_fn(model(x), y) for x, y in problem.batches)
    expected = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]
    )
    torch.testing.assert_close(H.gradient(), expected, rtol=1e-10, atol=1e-14)
    assert H.matvecs == 0


def test_kept_graphs_give_the_same_operator_and_gradient(problem):
    H = problem.operator(keep_graphs=True)
    assert H._graphs is not None and len(H._graphs) == len(problem.batches)
    V = torch.randn(H.dim, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(H.matmat(V), problem.dense @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H.gradient(), problem.operator().gradient(), rtol=1e-12, atol=0)
    torch.testing.assert_close(H.loss, problem.operator(keep_graphs=False).loss)
    assert problem.operator(keep_graphs=False)._graphs is None
