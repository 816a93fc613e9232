import torch
from torch import nn

import landscape.batching as batching
from landscape.batching import fastest_batch_size, split_batches


def test_split_batches_keeps_order_and_sizes():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    batches = split_batches(x, y, 4)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_fastest_batch_size_takes_the_best_repeat_of_the_fastest_candidate(monkeypatch):
    fake = {64: [3.0, 1.0], 128: [0.9, 0.95], 200: [2.0, 2.0]}
    calls = {size: iter(times) for size, times in fake.items()}
    monkeypatch.setattr(batching, "_pass_seconds", lambda model, inputs, size: next(calls[size]))
    model = nn.Linear(3, 2)
    best, seconds = fastest_batch_size(model, torch.randn(200, 3), candidates=(64, 128, 256, 4096))
    assert best == 128
    assert seconds == {64: 1.0 / 200, 128: 0.9 / 200, 200: 2.0 / 200}  # 256, 4096 -> all 200


def test_fastest_batch_size_runs_for_real():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    best, seconds = fastest_batch_size(model, torch.randn(300, 8), candidates=(32, 100))
    assert best in (32, 100) and set(seconds) == {32, 100}
    assert all(s > 0 for s in seconds.values())


def test_cpu_choices_are_timed_in_cpu_time_not_wall_time():
    import time

    from landscape.timing import clock_for

    assert clock_for(torch.device("cpu")) is time.process_time
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    time.sleep(0.05)  # waiting (like being descheduled on a busy machine) costs no CPU time
    assert time.process_time() - start_cpu < 0.5 * (time.perf_counter() - start_wall)
