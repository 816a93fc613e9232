"""Curvature by module: each block against the dense Hessian's block, and the traces' sum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature.layer_parts import layer_block, layer_parts
from landscape.curvature.model import model_curvature
from landscape.curvature.per_layer import module_blocks
from landscape.curvature.report import per_part_table
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


class Block(nn.Module):
    """A pre-norm transformer block's modules (what they compute does not matter here)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(4), nn.LayerNorm(4)
        self.attn = nn.ModuleDict({"c_attn": nn.Linear(4, 12), "c_proj": nn.Linear(4, 4)})
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(4, 8), "c_proj": nn.Linear(8, 4)})


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(5, 4), nn.Embedding(3, 4)
        self.h = nn.ModuleList([Block(), Block()])
        self.ln_f, self.head = nn.LayerNorm(4), nn.Linear(4, 5)


def test_transformer_modules_get_their_block_and_part():
    parts = layer_parts(TinyGPT())
    assert [
        (layer_block(m), parts[m])
        for m in ("wte", "h.0.ln_1", "h.0.attn.c_proj", "h.1.mlp.c_proj", "ln_f", "head")
    ] == [  # fmt: skip
        ("", "embedding"),
        ("h.0", "norm"),
        ("h.0", "attention"),
        ("h.1", "mlp"),
        ("", "norm"),
        ("", "head"),
    ]
    assert layer_parts(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Linear(2, 2))) == {}


def test_parts_of_a_transformer_sum_its_module_traces_exactly():
    """Per-part traces are sums of the measured module traces: they add to the total."""
    torch.manual_seed(0)
    model = TinyGPT().double()
    ids = torch.randint(0, 3, (6, 3))

    def loss(logits, labels):
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())

    class Runner(nn.Module):  # positions and residual stream, to give every module a gradient
        def __init__(self, gpt):
            super().__init__()
            self.gpt = gpt

        def forward(self, x):
            g = self.gpt
            h = g.wte(x) + g.wpe(torch.arange(x.shape[1]))
            for b in g.h:
                a = b.ln_1(h)
                h = h + b.attn["c_proj"](b.attn["c_attn"](a)[..., :4].tanh())
                h = h + b.mlp["c_proj"](b.mlp["c_fc"](b.ln_2(h)).tanh())
            return g.head(g.ln_f(h))

    result = model_curvature(Runner(model), loss, [(ids, ids)], top_k=1, trace=True,
                             trace_matvecs=300, per_layer=True, max_memory=None)  # fmt: skip
    rows = result.per_layer
    assert {r["part"] for r in rows} == {"embedding", "attention", "mlp", "norm", "head"}
    groups = per_part_table(rows)
    assert [(g["block"], g["part"]) for g in groups][:3] == [
        ("(outside blocks)", "embedding"),
        ("gpt.h.0", "norm"),
        ("gpt.h.0", "attention"),
    ]
    assert sum(g["trace"] for g in groups) == pytest.approx(sum(r["trace"] for r in rows))
    assert sum(g["size"] for g in groups) == result.dim
    attention = [r["trace"] for r in rows if r["block"] == "gpt.h.1" and r["part"] == "attention"]
    assert next(g["trace"] for g in groups if g["block"] == "gpt.h.1"
                and g["part"] == "attention") == pytest.approx(sum(attention))  # fmt: skip
