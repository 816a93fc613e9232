"""The graph-memory budget: measured bytes, kept and rebuilt batches, the same products."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape.curvature.model import model_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import PRODUCT_RESERVE as GGN_RESERVE
from landscape.operators.ggn import GGNOperator
from landscape.operators.hessian import PRODUCT_RESERVE, HessianOperator
from landscape.operators.memory import (
    MemoryBudget,
    available_bytes,
    default_budget,
    format_size,
    parse_size,
)


def problem(examples: int, batch: int = 32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 5)).double()
    x = torch.randn(examples, 20, dtype=torch.float64)
    y = torch.randint(0, 5, (examples,))
    return model, list(zip(x.split(batch), y.split(batch), strict=True))


def test_graph_bytes_are_linear_in_the_examples_and_cover_the_activations():
    sizes = {}
    for examples in (64, 128):
        model, batches = problem(examples, batch=examples)
        sizes[examples] = HessianOperator(model, F.cross_entropy, batches).graph_bytes
    assert sizes[128] == pytest.approx(2 * sizes[64], rel=0.05)
    # at least the input, the hidden pre-activation and the tanh output per example, float64
    assert sizes[64] >= 64 * (20 + 64 + 64) * 8


def test_budget_keeps_some_batches_and_the_products_do_not_change():
    model, batches = problem(128)
    unbounded = HessianOperator(model, F.cross_entropy, batches, keep_graphs=True)
    per_batch = unbounded.graph_bytes / len(batches)
    budget = int((PRODUCT_RESERVE + 2.5) * per_batch)  # room for 2 of the 4 batches
    bounded = HessianOperator(
        model, F.cross_entropy, batches, keep_graphs=True, graph_budget=budget
    )
    assert unbounded.kept_examples == 128 and bounded.kept_examples == 64
    assert bounded.graph_bytes + PRODUCT_RESERVE * per_batch <= budget and bounded.graphs_kept
    V = torch.randn(bounded.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(bounded.matmat(V), unbounded.matmat(V), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bounded.gradient(), unbounded.gradient(), rtol=1e-12, atol=1e-12)
    assert bounded.loss == pytest.approx(unbounded.loss, rel=1e-14)


def test_a_batch_larger_than_the_budget_is_an_error_with_the_numbers():
    model, batches = problem(64)
    with pytest.raises(
        LandscapeInputError, match=r"graph_budget 1000 B: one batch of 32 examples holds 4\d KiB"
    ) as error:
        HessianOperator(model, F.cross_entropy, batches, keep_graphs=True, graph_budget=1000)
    assert "batch size of at most" not in str(error.value)  # not even one example fits
    per_example = HessianOperator(model, F.cross_entropy, batches[:1]).graph_bytes / 32
    budget = int(PRODUCT_RESERVE * per_example * 10.5)
    with pytest.raises(LandscapeInputError, match=r"pass a batch size of at most (\d+)$") as error:
        HessianOperator(model, F.cross_entropy, batches, keep_graphs=True, graph_budget=budget)
    fitting = int(str(error.value).rsplit(" ", 1)[1])
    assert 1 <= fitting < 10  # a graph's fixed part makes small batches dearer per example
    smaller = problem(64, batch=fitting)[1]  # what the message says fits: rebuilt per product
    H = HessianOperator(model, F.cross_entropy, smaller, keep_graphs=True, graph_budget=budget)
    assert H.kept_examples == 0 and not H.graphs_kept


@pytest.mark.parametrize("output_hessian", ["cross_entropy", "autograd"])
def test_ggn_budget_keeps_some_linearizations_and_the_products_do_not_change(output_hessian):
    model, batches = problem(128)
    unbounded = GGNOperator(
        model, F.cross_entropy, batches, output_hessian=output_hessian, keep_graphs=True
    )
    per_batch = unbounded.graph_bytes / len(batches)
    assert unbounded.kept_examples == 128 and per_batch >= 32 * (20 + 64 + 64) * 8
    budget = int((GGN_RESERVE + 2.5) * per_batch)  # room for 2 of the 4 batches
    bounded = GGNOperator(
        model, F.cross_entropy, batches, output_hessian=output_hessian, keep_graphs=True,
        graph_budget=budget,
    )  # fmt: skip
    assert bounded.kept_examples == 64 and bounded.graphs_kept
    assert bounded.graph_bytes + GGN_RESERVE * per_batch <= budget
    V = torch.randn(bounded.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(bounded.matmat(V), unbounded.matmat(V), rtol=1e-12, atol=1e-12)
    with pytest.raises(LandscapeInputError, match="of linearization"):
        GGNOperator(model, F.cross_entropy, batches, keep_graphs=True, graph_budget=1000)


def test_model_curvature_reports_memory_and_equal_eigenvalues(monkeypatch):
    held = 10 * 2**20  # what the process holds already, fixed: RSS would make this flaky
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: held)
    model, batches = problem(600)  # model_curvature batches them by 256 on a CPU
    free = model_curvature(model, F.cross_entropy, batches, top_k=2, max_memory=None)
    per_example = free.memory["graph_bytes"] / 600
    budget = held + int((1 + PRODUCT_RESERVE + 0.2) * 256 * per_example)  # one batch kept
    tight = model_curvature(model, F.cross_entropy, batches, top_k=2, max_memory=budget)
    assert free.memory["kept_examples"] == 600 and free.memory["budget"] is None
    assert tight.memory["kept_examples"] == 256 and tight.memory["budget"] == budget - held
    assert tight.memory["peak"] > 0
    assert tight.eigenvalues == pytest.approx(free.eigenvalues, rel=1e-10)
    auto = model_curvature(model, F.cross_entropy, batches, top_k=1)
    assert auto.memory["budget"] is None or auto.memory["budget"] > 0
    with pytest.raises(LandscapeInputError, match="already holds 10 MiB"):
        model_curvature(model, F.cross_entropy, batches, top_k=1, max_memory=held // 2)
    ggn_free = model_curvature(model, F.cross_entropy, batches, operator="ggn", top_k=2,
                               max_memory=None)  # fmt: skip
    ggn_tight = model_curvature(model, F.cross_entropy, batches, operator="ggn", top_k=2,
                                max_memory=held + (ggn_free.memory["graph_bytes"] * 256) // 600
                                * 4)  # fmt: skip
    assert ggn_free.memory["kept_examples"] == 600 and ggn_tight.memory["kept_examples"] == 256
    assert ggn_tight.eigenvalues == pytest.approx(ggn_free.eigenvalues, rel=1e-10)


@pytest.mark.parametrize(
    "text, size",
    [("2048", 2048), ("3GB", 3 * 2**30), ("500MB", 500 * 2**20), ("1.5GiB", 3 * 2**29),
     ("64k", 64 * 2**10), (" 2 G ", 2 * 2**30)],
)  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "3XB", "-1GB", "0", "GB", "1e3"])
def test_parse_size_refuses(text):
    with pytest.raises(LandscapeInputError, match="memory size"):
        parse_size(text)


def test_default_budget_is_half_the_available_memory_shared_by_local_processes(monkeypatch):
    cpu = torch.device("cpu")
    available = available_bytes(cpu)
    if available is None:
        pytest.skip("no /proc/meminfo here")
    assert 0.4 * available <= default_budget(cpu) <= 0.6 * available
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert 0.1 * available <= default_budget(cpu) <= 0.15 * available


def test_format_size_reads_back():
    assert format_size(742 * 2**20) == "742 MiB" and format_size(3 * 2**30) == "3.0 GiB"
    assert format_size(1000) == "1000 B" and parse_size(format_size(600 * 2**10)) == 600 * 2**10


def test_the_suggested_batch_size_is_measured_with_batchnorm_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.Tanh(), nn.Linear(64, 5))
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    free = HessianOperator(model, F.cross_entropy, [(x, y)], bn_mode="train")
    budget = int(PRODUCT_RESERVE * free.graph_bytes / 3)
    with pytest.raises(LandscapeInputError, match=r"at most (\d+)$") as error:
        HessianOperator(model, F.cross_entropy, [(x, y)], bn_mode="train", graph_budget=budget)
    fitting = int(str(error.value).rsplit(" ", 1)[1])
    assert 2 <= fitting <= 64 // 3
    batches = list(zip(x.split(fitting), y.split(fitting), strict=True))
    batches = [b for b in batches if b[1].shape[0] > 1]  # BatchNorm needs two examples
    HessianOperator(model, F.cross_entropy, batches, bn_mode="train", graph_budget=budget)


def test_the_budget_error_quotes_the_size_given_and_what_the_process_holds():
    """--max-memory counts the whole process: the message says so, not just what is left."""
    model, batches = problem(64)
    budget = MemoryBudget(330 * 2**20, 330 * 2**20 - 1000)
    with pytest.raises(LandscapeInputError) as error:
        HessianOperator(model, F.cross_entropy, batches, keep_graphs=True, graph_budget=budget)
    message = str(error.value)
    assert message.startswith("max_memory 330 MiB (330 MiB held by the model, data and ")
    assert "1000 B left)" in message
    assert "raise max_memory to at least 330 MiB" in message
