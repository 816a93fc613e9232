"""Parameter blocks by glob: the operator is the dense Hessian's block of those rows and columns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature.eigen import lanczos
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import GGNOperator
from landscape.operators.hessian import HessianOperator
from landscape.operators.mean_loss import ParameterFilter, select_parameters
from tests.landscape.cases import CASES, dense_hessian, make_float64
from tests.landscape.operators.test_ggn import dense_ggn


def _block(model: nn.Module, names: list[str]) -> torch.Tensor:
    """Indices of ``names`` in the flat vector of every trainable parameter."""
    index, start = [], 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in names:
            index.extend(range(start, start + p.numel()))
        start += p.numel()
    return torch.tensor(index)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("selection", [ParameterFilter(("*weight",)),
                                       ParameterFilter(("*",), ("*weight",))],
                         ids=["weights", "all-but-weights"])  # fmt: skip
def test_a_block_is_the_dense_hessian_restricted_to_its_parameters(case, selection):
    model, loss_fn, batches = make_float64(case)
    names = select_parameters(model, selection)
    index = _block(model, names)
    for build, dense in ((HessianOperator, dense_hessian), (GGNOperator, dense_ggn)):
        block = dense(model, loss_fn, batches)[index][:, index]
        operator = build(model, loss_fn, batches, params=selection)
        assert operator.names == names and operator.dim == len(index)
        torch.testing.assert_close(operator.to_dense(), block, rtol=1e-10, atol=1e-12)
    H = HessianOperator(model, loss_fn, batches, params=selection)
    k = min(2, H.dim)
    found = lanczos(H, k=k, tol=1e-10, block_size=2, seed=0).eigenvalues  # blocks: doubles
    exact = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, batches)[index][:, index])
    torch.testing.assert_close(found, exact.flip(0)[:k], rtol=1e-6, atol=1e-9)


def test_globs_keep_model_order_and_names_keep_the_order_given():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    assert select_parameters(model, ["2.*", "0.bias"]) == ["0.bias", "2.weight", "2.bias"]
    assert select_parameters(model, ["2.bias", "0.weight"]) == ["2.bias", "0.weight"]
    assert select_parameters(model, ParameterFilter(("*",), ("*.bias",))) == [
        "0.weight", "2.weight"]  # fmt: skip
    model[0].weight.requires_grad_(False)
    assert select_parameters(model, ["*.weight"]) == ["2.weight"]  # frozen ones never match


@pytest.mark.parametrize(
    ("selection", "needle"),
    [
        (["conv*"], "'conv*' matches no trainable parameter; the model's trainable ones are 0.w"),
        (ParameterFilter(("0.*",), ("0.*",)), "leaves no parameter"),
        (ParameterFilter(("*",), ("nothing.*",)), "'nothing.*' matches no trainable"),
        (["3.weight"], "'3.weight' is not a parameter of the model"),
    ],
)
def test_selections_that_match_nothing_are_user_errors(selection, needle):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(LandscapeInputError, match=needle.replace("*", r"\*").replace(".", r"\.")):
        select_parameters(model, selection)
