"""Processes against threads: a 2D surface and Hessian-vector products on 1 and 2 processes.

On MNIST-1D (4000 train examples) around a cnn1d (9,610 parameters, random weights: the
cost of a forward pass does not depend on them) it times

- **surface**: a 2D grid (9 x 9 by default) of loss and accuracy over all 4000 examples,
  batch size 1000, (a) in one process with 1 and with 2 torch threads
  (:func:`~landscape.surface.evaluate.compute_surface`), (b) in two gloo processes with one thread
  each (:func:`~landscape.distributed.surface.compute_surface_distributed`: rounds of
  points, values gathered on rank 0);
- **HVP throughput**: Hessian-vector products of the mean loss over 2048 examples (one
  batch per process, gradient graph reused), one product at a time as Lanczos asks for
  them, (a) one process with 1 and 2 threads, (b) two processes x 1 thread, each holding
  1024 examples, products all-reduced
  (:class:`~landscape.distributed.operator.DataParallelOperator`).

This process is rank 0 and spawns rank 1; rank 1 waits in a barrier (idle) while rank 0
times the one-process runs, so every repeat times all configurations back to back under
the same background load. Process start-up (~5-10 s of imports on this machine) is not in
the numbers: it is paid once per command. The table reports medians over the repeats of
wall time (rates and speed-up ratios) and of CPU seconds summed over the processes: on a
machine shared with other jobs the wall times follow their load, while the CPU ratio
2x1 / 1x1 is the work that splitting adds (all-reduces, gathers, duplicated set-up) and
bounds the speed-up of two processes on two free cores at ``2 / ratio``.

Run: ``python bench/distributed.py`` (``--repeats 5 --grid 9 --matvecs 20``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.functional import cross_entropy

from distill.data import load_dataset
from distill.models import build_model
from landscape.distributed.operator import data_parallel_operator
from landscape.distributed.process import all_reduce_sum, shard_examples
from landscape.distributed.surface import compute_surface_distributed
from landscape.operators.batching import split_batches
from landscape.operators.hessian import HessianOperator
from landscape.surface.directions import random_direction
from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points

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


@dataclass
class Run:
    """One timed run: wall seconds, and CPU seconds summed over the processes taking part."""

    wall: float
    cpu: float


def timed(work: Callable[[], object], distributed: bool) -> Run:
    """Time ``work``; in two processes from a common start to the end of the slower one."""
    if distributed:
        dist.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    if distributed:
        dist.barrier()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if distributed:
        cpu = float(all_reduce_sum(torch.tensor([cpu], dtype=torch.float64)))
    return Run(wall, cpu)


def surface_run(model, directions, data, coords, distributed: bool) -> tuple[Run, np.ndarray]:
    evaluator = SurfaceEvaluator(model, cross_entropy, directions, vectorize="never")
    loss = np.full(len(coords), np.nan)

    def write(indices, values):
        loss[indices] = values["train"].loss

    compute = compute_surface_distributed if distributed else compute_surface
    pending = np.arange(len(coords))
    run = timed(lambda: compute(evaluator, data, coords, pending, write), distributed)
    return run, loss


def hvp_run(operator, matvecs: int, distributed: bool) -> Run:
    vectors = torch.randn(matvecs, operator.dim, generator=torch.Generator().manual_seed(1))
    operator.matvec(vectors[0])  # warm-up

    def products():
        for v in vectors:
            operator.matvec(v)

    return timed(products, distributed)


def join(port: int, rank: int, grid: int):
    """Join the two-process gloo group; the workload: model, surface data, HVP examples."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=timedelta(minutes=30),
    )  # fmt: skip
    model, inputs, targets, directions, coords = setup(grid)
    data = {"train": split_batches(inputs, targets, SURFACE_BATCH)}
    hvp_examples = inputs[:HVP_SAMPLES], targets[:HVP_SAMPLES]
    return model, data, directions, coords, hvp_examples


def rank_one(port: int, args: argparse.Namespace) -> None:
    """Rank 1: the second process of every two-process run."""
    torch.set_num_threads(1)
    model, data, directions, coords, (x, y) = join(port, 1, args.grid)
    operator = data_parallel_operator("hessian", model, cross_entropy, [shard_examples(x, y)])
    for _ in range(args.repeats):
        surface_run(model, directions, data, coords, distributed=True)
        hvp_run(operator, args.matvecs, distributed=True)
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
    model, data, directions, coords, (x, y) = join(port, 0, args.grid)
    single = HessianOperator(model, cross_entropy, [(x, y)])
    torch.set_num_threads(1)
    shared = data_parallel_operator("hessian", model, cross_entropy, [shard_examples(x, y)])

    surface: dict[str, list[Run]] = {"1x1": [], "1x2": [], "2x1": []}
    hvps: dict[str, list[Run]] = {"1x1": [], "1x2": [], "2x1": []}
    for repeat in range(args.repeats):
        values = {}
        for threads in (1, 2):  # rank 1 waits, idle, in its next barrier
            torch.set_num_threads(threads)
            run, values[threads] = surface_run(model, directions, data, coords, False)
            surface[f"1x{threads}"].append(run)
            hvps[f"1x{threads}"].append(hvp_run(single, args.matvecs, distributed=False))
        torch.set_num_threads(1)
        run, values["2x1"] = surface_run(model, directions, data, coords, True)
        surface["2x1"].append(run)
        hvps["2x1"].append(hvp_run(shared, args.matvecs, distributed=True))
        np.testing.assert_allclose(values["2x1"], values[1], rtol=1e-5)
        print(
            f"repeat {repeat + 1}: surface wall s "
            + " ".join(f"{k} {v[-1].wall:.2f}" for k, v in surface.items())
            + f" | {args.matvecs} HVPs wall s "
            + " ".join(f"{k} {v[-1].wall:.2f}" for k, v in hvps.items()),
            flush=True,
        )
    other.join()
    dist.destroy_process_group()
    print(
        f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; medians of {args.repeats} repeats"
    )
    report(f"surface {args.grid}x{args.grid} (x 4000 examples)", surface, args.grid**2, "points")
    report(f"HVPs over {HVP_SAMPLES} examples", hvps, args.matvecs, "HVPs")


def report(title: str, runs: dict[str, list[Run]], count: int, unit: str) -> None:
    """Rates of medians, speed-ups against 1x2 and 1x1, and CPU seconds spent (all processes)."""
    wall = {k: statistics.median(r.wall for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.cpu for r in v) for k, v in runs.items()}
    print(f"{title}, processes x threads:")
    for k in runs:
        print(
            f"  {k}: {count / wall[k]:7.2f} {unit}/s wall, {cpu[k]:6.2f} CPU s "
            f"({wall[k]:.2f} s wall)"
        )
    print(
        f"  wall speed-up 2x1 over 1x2: {wall['1x2'] / wall['2x1']:.2f}; 2x1 over 1x1: "
        f"{wall['1x1'] / wall['2x1']:.2f}; 1x2 over 1x1: {wall['1x1'] / wall['1x2']:.2f}"
    )
    print(
        f"  CPU spent, 2x1 / 1x1: {cpu['2x1'] / cpu['1x1']:.2f}; 1x2 / 1x1: "
        f"{cpu['1x2'] / cpu['1x1']:.2f}"
    )


if __name__ == "__main__":
    main()
