"""Curvature by module: each block against the dense Hessian's block, and the traces' sum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature.model import model_curvature
from landscape.curvature.per_layer import module_blocks
from tests.landscape.cases import CASES, dense_hessian, make_float64
from tests.landscape.operators.test_parameter_selection import _block


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("trace", [True, False], ids=["dense-blocks", "lanczos-blocks"])
def test_each_block_equals_the_dense_block_and_the_traces_sum_to_the_trace(case, trace):
    model, loss_fn, batches = make_float64(case)
    result = model_curvature(model, loss_fn, batches, top_k=2, tol=1e-10, trace=trace,
                             trace_matvecs=300, per_layer=True, max_memory=None)  # fmt: skip
    H = dense_hessian(model, loss_fn, batches)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [name for r in result.per_layer for name in r["parameters"]] == trainable
    for row in result.per_layer:
        index = _block(model, row["parameters"])
        block = H[index][:, index]
        exact = torch.linalg.eigvalsh(block).flip(0)[: len(row["eigenvalues"])]
        assert row["size"] == len(index) and len(row["eigenvalues"]) == min(2, len(index))
        if row["method"] == "dense":
            found = torch.tensor(row["eigenvalues"], dtype=exact.dtype)
            torch.testing.assert_close(found, exact, rtol=1e-10, atol=1e-12)
        else:  # Lanczos: the top eigenvalue (repeated ones need blocks; see its tests)
            assert row["eigenvalues"][0] == pytest.approx(float(exact[0]), rel=1e-6, abs=1e-9)
    if trace:  # every block small enough to be exact here: they sum to the trace exactly
        assert all(r["method"] == "dense" for r in result.per_layer)
        total = sum(r["trace"] for r in result.per_layer)
        assert total == pytest.approx(float(H.trace()), rel=1e-10, abs=1e-12)
    else:
        assert any(r["method"] == "lanczos" for r in result.per_layer)
    assert result.matvecs >= sum(r["matvecs"] for r in result.per_layer)


def test_blocks_are_the_modules_owning_parameters_in_model_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.body = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))

    names = [n for n, _ in Net().named_parameters()]
    assert module_blocks(Net(), names) == [
        ("", ["scale"]), ("body.0", ["body.0.weight", "body.0.bias"]),
        ("body.2", ["body.2.weight", "body.2.bias"]),
    ]  # fmt: skip
    assert module_blocks(Net(), ["body.2.bias", "scale"]) == [
        ("", ["scale"]), ("body.2", ["body.2.bias"])]  # fmt: skip
