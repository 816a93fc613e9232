import torch
from torch import nn

import landscape.operators.batching as batching
import landscape.surface.forward_cost as forward_cost
from landscape.operators.batching import split_batches
from landscape.surface.forward_cost import fastest_batch_size


def test_split_batches_keeps_order_and_sizes():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    batches = split_batches(x, y, 4)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_fastest_batch_size_takes_the_best_round_of_the_fastest_candidate(monkeypatch):
    fake = {64: [3.0, 1.0, 2.0], 128: [0.9, 0.95, 5.0], 200: [2.0, 2.0, 2.5]}
    calls = {size: iter(times) for size, times in fake.items()}
    order = []

    def timed(model, inputs, size):
        order.append(size)
        return next(calls[size])

    monkeypatch.setattr(forward_cost, "_pass_seconds", timed)
    model = nn.Linear(3, 2)
    best, seconds = fastest_batch_size(model, torch.randn(200, 3), candidates=(64, 128, 256, 4096))
    assert best == 128
    assert seconds == {64: 1.0 / 200, 128: 0.9 / 200, 200: 2.0 / 200}  # 256, 4096 -> all 200
    assert order == [64, 128, 200] * 3  # interleaved rounds, not one candidate's repeats


def test_fastest_batch_size_runs_for_real_and_returns_the_measured_minimum():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    best, seconds = fastest_batch_size(model, torch.randn(300, 8), candidates=(32, 100, 1000))
    assert set(seconds) == {32, 100, 300}  # 1000 collapses to the 300 examples there are
    assert all(s > 0 for s in seconds.values())
    assert seconds[best] == min(seconds.values())


def test_candidates_are_timed_with_the_devices_clock(monkeypatch):
    """CPU time on a CPU (a shared machine stretches wall time, not the work done)."""
    import time

    from landscape.timing import clock_for

    assert clock_for(torch.device("cpu")) is time.process_time
    ticks = iter(range(100))
    monkeypatch.setattr(forward_cost, "clock_for", lambda device: lambda: float(next(ticks)))
    _, seconds = fastest_batch_size(nn.Linear(3, 2), torch.randn(10, 3), candidates=(5, 10))
    assert seconds == {5: 1 / 10, 10: 1 / 10}  # one fake tick per pass, per example


def test_curvature_batches_policy():
    x, y = torch.randn(600, 3), torch.arange(600)
    kept, keep = batching.curvature_batches(x, y)
    assert keep and [len(t) for _, t in kept] == [256, 256, 88]
    bounded, keep = batching.curvature_batches(x, y, batch_size=500)
    assert not keep and [len(t) for _, t in bounded] == [500, 100]


def test_gather_examples_takes_the_first_samples_of_dict_inputs_in_order():
    data = [({"a": torch.full((4, 2), float(k))}, torch.full((4,), k)) for k in range(3)]
    inputs, targets = batching.gather_examples(data, samples=6)
    assert targets.tolist() == [0, 0, 0, 0, 1, 1] and inputs["a"][:, 0].tolist() == targets.tolist()
