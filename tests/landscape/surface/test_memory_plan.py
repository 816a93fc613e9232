"""Surfaces within a memory budget: the forward pass measured, batch sizes and blocks that fit."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.surface.forward_cost import LiveBytes, forward_bytes
from landscape.surface.loss_surface import forward_plan, loss_surface
from tests.landscape.surface_problems import classification_data, mlp


def test_live_bytes_counts_what_is_alive_at_once_and_views_once():
    before = torch.zeros(10_000)  # made outside: not counted
    with LiveBytes() as live:
        a = torch.ones(1000)  # 4000 bytes
        b = a.view(10, 100)  # a view: the same storage
        c = torch.ones(1000, dtype=torch.float64)  # 8000 bytes: 12000 alive
        del a, b, c
        d = before + 1  # 40000 bytes, the others freed
        del d
    assert live.peak == 40_000 and live.live == 0


def test_forward_bytes_of_an_mlp_cover_its_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 256), nn.Tanh(), nn.Linear(256, 4)).double()
    per_example = forward_bytes(model, torch.randn(64, 20, dtype=torch.float64))
    # the hidden pre-activation and its tanh are alive at once: 2 x 256 float64 per example
    assert 2 * 256 * 8 <= per_example <= 4 * (20 + 256 + 4) * 8


def _surface(tmp_path, name, **options):
    model = mlp()
    data = classification_data([96], (6,))
    result = loss_surface(model, nn.functional.cross_entropy, data, tmp_path / name,
                          x_range="-1:1:9", y_range="-1:1:5", **options)  # fmt: skip
    with h5py.File(result.out) as f:
        return result, np.asarray(f["train_loss"])


def test_a_tight_budget_changes_the_batching_not_the_values(tmp_path, monkeypatch):
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    free, free_loss = _surface(tmp_path, "free.h5", max_memory=None)
    assert free.memory["budget"] is None and free.memory["peak"] > 0
    plan = forward_plan(mlp(), classification_data([96], (6,))[0][0], 1, "auto")  # exact
    budget = int(plan.point_bytes * 20 + plan.forward(16))  # a 16-example forward fits
    tight, tight_loss = _surface(tmp_path, "tight.h5", max_memory=budget)
    assert 16 <= tight.batch_size < 32 < free.batch_size  # the largest that fits: 64 does not
    assert tight.memory["budget"] == budget
    assert tight.memory["forward_bytes"] + tight.memory["block_bytes"] <= budget
    assert 1 <= tight.memory["block_points"] <= 20
    np.testing.assert_allclose(tight_loss, free_loss, rtol=1e-12, atol=0)


def test_a_batch_size_beyond_the_budget_is_refused_with_one_that_fits(tmp_path, monkeypatch):
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    plan = forward_plan(mlp(), classification_data([96], (6,))[0][0], 1, "auto")  # exact
    budget = int(plan.point_bytes * 4 + plan.forward(10))
    with pytest.raises(LandscapeInputError, match=r"pass a batch size of at most (\d+) or") as err:
        _surface(tmp_path, "big.h5", max_memory=budget, batch_size=64)
    assert not (tmp_path / "big.h5").exists()
    fitting = int(str(err.value).split("at most ")[1].split()[0])
    assert 10 <= fitting < 64
    result, _ = _surface(tmp_path, "fits.h5", max_memory=budget, batch_size=fitting)
    assert result.batch_size == fitting
    with pytest.raises(LandscapeInputError, match="a forward pass of 1 example works in"):
        _surface(tmp_path, "none.h5", max_memory=plan.point_bytes // 2)


def test_the_cheap_estimate_is_above_the_exact_count_and_settles_roomy_budgets():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 256), nn.Tanh(), nn.Linear(256, 4)).double()
    x = torch.randn(64, 20, dtype=torch.float64)
    assert forward_bytes(model, x, exact=False) >= forward_bytes(model, x)
    roomy = forward_plan(model, x, 2**34, "never")
    assert roomy.per_example == forward_bytes(model, x, exact=False)  # no dispatch mode
    tight = forward_plan(model, x, 10**6, "never")
    assert tight.per_example == forward_bytes(model, x)  # the budget binds: counted exactly
