"""Every operator against its dense float64 matrix, on every case (BackPACK-style matrix).

Operators: the Hessian, the GGN, the one-process data-parallel Hessian and the residual
H - G. Cases: ``tests/landscape/cases.py`` (unequal batches, one batch, BatchNorm in eval
mode, a low-rank least squares, frozen parameters, a sum-reduction loss, dict inputs).
"""

from __future__ import annotations

import pytest
import torch

from landscape.distributed.operator import DataParallelOperator
from landscape.operators.ggn import GGNOperator, residual_operator
from landscape.operators.hessian import HessianOperator
from tests.landscape.cases import MATRIX_CASES, dense_hessian, make_float64
from tests.landscape.operators.test_ggn import dense_ggn

OPERATORS = {
    "hessian": (HessianOperator, dense_hessian),
    "ggn": (GGNOperator, dense_ggn),
    "data-parallel": (
        lambda *problem: DataParallelOperator(HessianOperator(*problem)),
        dense_hessian,
    ),
    "residual": (
        lambda *problem: residual_operator(HessianOperator(*problem), GGNOperator(*problem)),
        lambda *problem: dense_hessian(*problem) - dense_ggn(*problem),
    ),
}


@pytest.mark.parametrize("case", MATRIX_CASES, ids=[c.id for c in MATRIX_CASES])
@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_equals_its_dense_matrix(name, case):
    model, loss_fn, batches = make_float64(case)
    build, reference = OPERATORS[name]
    operator = build(model, loss_fn, batches)
    dense = reference(model, loss_fn, batches)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert operator.dim == dense.shape[0] == trainable
    torch.testing.assert_close(operator.to_dense(), dense, rtol=1e-10, atol=1e-12)
    V = torch.randn(
        operator.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(operator.matmat(V), dense @ V, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_every_operator_answers_the_whole_interface(name):
    """What reports read (data, kept graphs, this process's share) without probing."""
    model, loss_fn, batches = make_float64(MATRIX_CASES[0])
    operator = OPERATORS[name][0](model, loss_fn, batches)
    local = operator.local
    if name == "data-parallel":
        assert isinstance(local, HessianOperator) and local.dim == operator.dim
    else:
        assert local is operator
    assert isinstance(operator.graphs_kept, bool)
    assert operator.graph_bytes >= 0 and operator.kept_examples >= 0
    if name == "residual":  # a difference of two operators: a matrix without data
        assert operator.batches is None and not operator.graphs_kept
        assert (operator.graph_bytes, operator.kept_examples) == (0, 0)
    else:
        assert sum(len(y) for _, y in operator.batches) == operator.num_examples
        assert operator.graphs_kept == local.graphs_kept
        assert (operator.graph_bytes, operator.kept_examples) == (
            local.graph_bytes,
            local.kept_examples,
        )
