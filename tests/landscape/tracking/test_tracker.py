"""SharpnessTracker: lambda_1 along a training run against dense float64 Hessians."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.tracking import SharpnessTracker, stability_threshold
from tests.landscape.cases import dense_hessian

LOSS = nn.functional.cross_entropy


def _run(tracker: SharpnessTracker | None, steps: int = 12, lr: float = 0.5):
    """Full-batch SGD with momentum on a float64 MLP; the tracker after each step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.5)
    dense = {}
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = LOSS(model(x), y)
        loss.backward()
        optimizer.step()
        if tracker is not None:
            record = tracker.step(model, step=step, lr=lr, momentum=0.5, loss=float(loss.detach()))
            if record is not None:
                dense[step] = torch.linalg.eigvalsh(dense_hessian(model, LOSS, [(x, y)]))
    return model, (x, y), dense


def _data():
    torch.manual_seed(0)
    nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))  # the same draws as _run
    return [(torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,)))]


def test_every_record_holds_the_dense_top_eigenvalue_to_tol():
    tracker = SharpnessTracker(_data(), LOSS, every=3, tol=1e-4)
    _, _, dense = _run(tracker)
    assert [r["step"] for r in tracker.records] == [3, 6, 9, 12]
    for record in tracker.records:
        top = float(dense[record["step"]][-1])
        assert record["converged"]
        assert abs(record["lambda_1"] - top) <= 1e-4 * top
        assert record["stability_threshold"] == pytest.approx((2 + 2 * 0.5) / 0.5)
        assert record["lr"] == 0.5 and record["momentum"] == 0.5 and record["probe_examples"] == 64


@pytest.mark.parametrize("lr", [0.02, 0.5])
def test_warm_starts_spend_fewer_products_than_cold_ones(lr):
    """Small steps: <= 4 products per step after the first; large ones still fewer than cold."""
    warm = SharpnessTracker(_data(), LOSS, every=1)
    cold = SharpnessTracker(_data(), LOSS, every=1, warm_start=False)
    _run(warm, lr=lr)
    _run(cold, lr=lr)
    for a, b in zip(warm.records, cold.records, strict=True):
        assert a["lambda_1"] == pytest.approx(b["lambda_1"], rel=2e-3)
    after_first = [r["matvecs"] for r in warm.records[1:]]
    assert sum(after_first) < 0.7 * sum(r["matvecs"] for r in cold.records[1:])
    if lr < 0.1:
        assert sum(after_first) / len(after_first) <= 4


def test_trace_and_forced_and_counted_steps():
    tracker = SharpnessTracker(_data(), LOSS, every=None, trace=True, trace_matvecs=30)
    model, data, _ = _run(None, steps=2)
    assert tracker.step(model) is None and tracker.calls == 1
    record = tracker.step(model, force=True, epoch=3)
    assert record["step"] == 2 and record["epoch"] == 3 and "lr" not in record
    exact = float(torch.linalg.eigvalsh(dense_hessian(model, LOSS, [data])).sum())
    assert abs(record["trace"] - exact) <= 4 * record["trace_stderr"] + 1e-9 * abs(exact)


def test_log_receives_each_record():
    seen = []
    tracker = SharpnessTracker(_data(), LOSS, every=4, log=seen.append, samples=32)
    _run(tracker, steps=8)
    assert seen == tracker.records and [r["probe_examples"] for r in seen] == [32, 32]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"every": 0}, "every 0"), ({"bn_mode": "both"}, "bn_mode"), ({"tol": 0}, "tol"),
     ({"samples": 0}, "samples 0")],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(LandscapeInputError, match=message):
        SharpnessTracker(_data(), LOSS, **kwargs)


def test_stability_threshold():
    assert stability_threshold(0.01) == pytest.approx(200.0)
    assert stability_threshold(0.1, 0.9) == pytest.approx(38.0)
    with pytest.raises(LandscapeInputError, match="lr 0"):
        stability_threshold(0.0)


def test_hugging_face_callback_measures_at_its_steps():
    pytest.importorskip("transformers", reason="transformers is not installed")
    from transformers import TrainerControl, TrainerState

    from landscape.tracking.huggingface import SharpnessCallback

    model, data, _ = _run(None, steps=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    callback = SharpnessCallback(SharpnessTracker([data], LOSS, every=2))
    control = TrainerControl()
    for step in (1, 2):
        state = TrainerState(global_step=step)
        done = callback.on_step_end(None, state, control, model=model, optimizer=optimizer)
        assert done is control
    [record] = callback.tracker.records
    exact = float(torch.linalg.eigvalsh(dense_hessian(model, LOSS, [data]))[-1])
    assert record["step"] == 2 and abs(record["lambda_1"] - exact) <= 1e-3 * exact
    assert record["lr"] == 0.05 and record["momentum"] == 0.9
    assert record["stability_threshold"] == pytest.approx(3.8 / 0.05)


LIGHTNING = importlib.util.find_spec("lightning") or importlib.util.find_spec("pytorch_lightning")


@pytest.mark.skipif(
    LIGHTNING is None,
    reason="PyTorch Lightning is not installed (not a dependency; the lightning extra)",
)
def test_lightning_callback_measures_at_its_steps():
    from landscape.tracking.lightning import SharpnessCallback

    model, data, _ = _run(None, steps=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    class Trainer:  # what the callback reads of lightning.Trainer
        global_step = 4
        optimizers = [optimizer]

    callback = SharpnessCallback(SharpnessTracker([data], LOSS, every=2))
    callback.on_train_batch_end(Trainer(), model, None, None, 0)
    [record] = callback.tracker.records
    exact = float(torch.linalg.eigvalsh(dense_hessian(model, LOSS, [data]))[-1])
    assert record["step"] == 4 and abs(record["lambda_1"] - exact) <= 1e-3 * exact


def test_adapter_modules_import_their_trainer_only_when_the_callback_is_looked_up():
    import landscape.tracking.lightning as lightning_adapter

    if LIGHTNING is None:
        with pytest.raises(ImportError):
            lightning_adapter.SharpnessCallback  # noqa: B018 (the lookup imports Lightning)
    with pytest.raises(AttributeError):
        lightning_adapter.Other  # noqa: B018
