"""Processes against threads: a 2D surface and Hessian-vector products on 1 and 2 processes.

On MNIST-1D (4000 train examples) around a cnn1d (9,610 parameters, random weights: the
cost of a forward pass does not depend on them) it times

- **surface**: a 2D grid (9 x 9 by default) of loss and accuracy over all 4000 examples,
  batch size 1000, (a) in one process with 1 and with 2 torch threads
  (:func:`~landscape.surface.compute_surface`), (b) in two gloo processes with one thread
  each (:func:`~landscape.distributed_surface.compute_surface_distributed`: rounds of
  points, values gathered on rank 0);
- **HVP throughput**: Hessian-vector products of the mean loss over 2048 examples (one
  batch per process, gradient graph reused), one product at a time as Lanczos asks for
  them, (a) one process with 1 and 2 threads, (b) two processes x 1 thread, each holding
  1024 examples, products all-reduced (:class:`~landscape.data_parallel.DataParallelOperator`).

This process is rank 0 and spawns rank 1; rank 1 waits in a barrier (idle) while rank 0
times the one-process runs, so every repeat times all configurations back to back under
the same background load. Process start-up (~5-10 s of imports on this machine) is not in
the numbers: it is paid once per command. The table reports medians of wall time over
the repeats and the speed-up ratios of medians.

Run: ``python bench/distributed.py`` (``--repeats 5 --grid 9 --matvecs 20``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.functional import cross_entropy

from distill.data import load_dataset
from distill.models import build_model
from landscape.batching import split_batches
from landscape.data_parallel import data_parallel
from landscape.directions import random_direction
from landscape.distributed import shard_examples
from landscape.distributed_surface import compute_surface_distributed
from landscape.hessian import HessianOperator
from landscape.surface import SurfaceEvaluator, compute_surface, grid_points

SURFACE_BATCH = 1000
HVP_SAMPLES = 2048


def setup(grid: int):
    """The model, data, directions and grid; identical in both processes (seeded)."""
    torch.manual_seed(0)
    bundle = load_dataset("mnist1d")
    inputs, targets = bundle.train_eval.tensors
    model = build_model("cnn1d", num_classes=bundle.num_classes).eval()
    generator = torch.Generator().manual_seed(0)
    directions = [random_direction(model, generator, "filter", "biasbn") for _ in range(2)]
    axis = np.linspace(-1, 1, grid)
    return model, inputs, targets, directions, grid_points(axis, axis)


def time_surface(model, directions, data, coords, distributed: bool) -> tuple[float, np.ndarray]:
    evaluator = SurfaceEvaluator(model, cross_entropy, directions, vectorize="never")
    loss = np.full(len(coords), np.nan)

    def write(indices, values):
        loss[indices] = values["train"].loss

    pending = np.arange(len(coords))
    start = time.perf_counter()
    if distributed:
        compute_surface_distributed(evaluator, data, coords, pending, write)
        dist.barrier()
    else:
        compute_surface(evaluator, data, coords, pending, write)
    return time.perf_counter() - start, loss


def time_hvps(operator, matvecs: int, distributed: bool) -> float:
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(matvecs, operator.dim, generator=generator)
    operator.matvec(vectors[0])  # warm-up
    if distributed:
        dist.barrier()
    start = time.perf_counter()
    for v in vectors:
        operator.matvec(v)
    return matvecs / (time.perf_counter() - start)


def rank_one(port: int, args: argparse.Namespace) -> None:
    """Rank 1: the second process of every two-process run."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=1, world_size=2,
        timeout=timedelta(minutes=30),
    )  # fmt: skip
    model, inputs, targets, directions, coords = setup(args.grid)
    data = {"train": split_batches(inputs, targets, SURFACE_BATCH)}
    x, y = inputs[:HVP_SAMPLES], targets[:HVP_SAMPLES]
    operator = data_parallel(HessianOperator)(model, cross_entropy, [shard_examples(x, y)])
    for _ in range(args.repeats):
        dist.barrier()  # rank 0 timed its one-process runs
        time_surface(model, directions, data, coords, distributed=True)
        dist.barrier()
        time_hvps(operator, args.matvecs, distributed=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid", type=int, default=9, help="points per axis")
    parser.add_argument("--matvecs", type=int, default=20)
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = mp.get_context("spawn").Process(target=rank_one, args=(port, args))
    other.start()
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2,
        timeout=timedelta(minutes=30),
    )  # fmt: skip
    model, inputs, targets, directions, coords = setup(args.grid)
    data = {"train": split_batches(inputs, targets, SURFACE_BATCH)}
    x, y = inputs[:HVP_SAMPLES], targets[:HVP_SAMPLES]
    single = HessianOperator(model, cross_entropy, [(x, y)])
    torch.set_num_threads(1)
    shared = data_parallel(HessianOperator)(model, cross_entropy, [shard_examples(x, y)])

    surface = {"1x1": [], "1x2": [], "2x1": []}
    hvps = {"1x1": [], "1x2": [], "2x1": []}
    for repeat in range(args.repeats):
        values = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            seconds, values[threads] = time_surface(model, directions, data, coords, False)
            surface[f"1x{threads}"].append(seconds)
            hvps[f"1x{threads}"].append(time_hvps(single, args.matvecs, distributed=False))
        torch.set_num_threads(1)
        dist.barrier()
        seconds, values["2x1"] = time_surface(model, directions, data, coords, True)
        surface["2x1"].append(seconds)
        dist.barrier()
        hvps["2x1"].append(time_hvps(shared, args.matvecs, distributed=True))
        np.testing.assert_allclose(values["2x1"], values[1], rtol=1e-5)
        print(
            f"repeat {repeat + 1}: surface s "
            + " ".join(f"{k} {v[-1]:.2f}" for k, v in surface.items())
            + " | HVP/s "
            + " ".join(f"{k} {v[-1]:.2f}" for k, v in hvps.items()),
            flush=True,
        )
    other.join()
    dist.destroy_process_group()
    report(args, surface, hvps)


def report(args, surface: dict[str, list[float]], hvps: dict[str, list[float]]) -> None:
    s = {k: statistics.median(v) for k, v in surface.items()}
    h = {k: statistics.median(v) for k, v in hvps.items()}
    points = args.grid**2
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"OMP_WAIT_POLICY {policy}; medians of {args.repeats} repeats"
    )
    print(f"surface {args.grid}x{args.grid} ({points} points x 4000 examples), wall seconds:")
    for k in s:
        print(f"  {k} (processes x threads): {s[k]:7.2f} s  ({points / s[k]:.1f} points/s)")
    print(_speedups({k: 1 / v for k, v in s.items()}))
    print(f"HVPs over {HVP_SAMPLES} examples, products per second:")
    for k in h:
        print(f"  {k}: {h[k]:7.2f} /s")
    print(_speedups(h))


def _speedups(rates: dict[str, float]) -> str:
    return (
        f"  speed-up 2x1 over 1x2: {rates['2x1'] / rates['1x2']:.2f}; "
        f"2x1 over 1x1: {rates['2x1'] / rates['1x1']:.2f}; "
        f"1x2 over 1x1: {rates['1x2'] / rates['1x1']:.2f}"
    )


if __name__ == "__main__":
    main()
