"""Loss-surface speed: flatscape against a loss-landscape-style loop and a lower bound.

For a 2D grid (21 x 21 by default) on MNIST-1D (4000 train examples) around a quickly
trained cnn1d teacher and an MLP, with the same two filter-normalized directions, it times

- **loss-landscape loop**: what ``plot_surface.py`` does per point: write
  ``theta + a*dx + b*dy`` into the model's weights (``net_plotter.set_weights``), then one
  full pass over a ``DataLoader`` (batch 128) with ``evaluation.eval_loss``
  (``loss.item() * batch_size``, ``predicted.eq(targets).sum()``);
- **flatscape**: what ``flatscape surface`` does after loading: ``fastest_batch_size``
  (``--batch-size auto``), then ``SurfaceEvaluator`` + ``compute_surface`` writing a
  ``SurfaceStore`` (HDF5 flushes included);
- **lower bound**: grid points x one no-grad forward pass over the same 4000 examples at the
  best batch size (the fastest of a list of candidates, best of 3), timed as that many
  consecutive passes; and the same with the cross-entropy and accuracy of every batch,
  which any surface needs and which costs a small MLP about a third of its forward pass.

It also times ``vmap`` against the loop on MLPs of several widths and batch sizes (what
``--vectorize auto`` decides between).

Every repeat runs the three in turn; the table reports medians and the ratios of medians
of the process's CPU time (one torch thread, so CPU time is the work done; on a shared
machine wall time also counts other people's jobs), with wall times printed below.

Last, **the command as a user runs it** (``--cli``, on by default): ``flatscape surface
CKPT --x -1:1:G --y -1:1:G --samples 4000`` on a cnn1d teacher trained by ``flatscape
train``, whole process, wall time, at torch's default threads and at ``--threads 1``.
Its start-up (imports, checkpoint, dataset, store) is the same command on one grid point
at a fixed batch size, minus one forward pass; the bound is G*G no-grad forward passes at
the best batch size in this process at the same thread count. Everything the command does
beyond start-up (batch-size search, vmap trial, HDF5 writes) counts against the bound.
Beside it, the loss-landscape loop above as a whole process (load the checkpoint and the
same 4000 examples, then perturb and evaluate in batches of 128), at the same threads.

Run: ``python bench/surface.py`` (``--repeats 3 --grid 21`` are the defaults).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from distill.data import load_dataset
from distill.trainer import Recipe, train_teacher
from landscape.operators.batching import split_batches
from landscape.surface.directions import random_direction
from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points
from landscape.surface.forward_cost import fastest_batch_size
from landscape.surface.store import SurfaceSpec, SurfaceStore

BATCH_CANDIDATES = (32, 64, 128, 256, 500, 1000, 2000, 4000)
CLOCK = time.process_time
"""CPU seconds of this process: other jobs on a shared machine stretch wall time, not this."""


def loss_landscape_loop(model, directions, coords, dataset) -> np.ndarray:
    """plot_surface.py's crunch(): perturb the weights in place, full DataLoader pass, next."""
    net = copy.deepcopy(model).eval()
    weights = [p.data.clone() for p in net.parameters()]
    dx, dy = ([d[name] for name, _ in net.named_parameters()] for d in directions)
    loader = DataLoader(dataset, batch_size=128, shuffle=False)
    criterion = nn.CrossEntropyLoss()
    losses = np.empty(len(coords))
    for k, (a, b) in enumerate(coords):
        for p, w, d0, d1 in zip(net.parameters(), weights, dx, dy, strict=True):
            p.data = w + (d0 * a + d1 * b)
        total_loss, correct, total = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                outputs = net(inputs)
                total_loss += criterion(outputs, targets).item() * inputs.size(0)
                correct += outputs.max(1)[1].eq(targets).sum().item()
                total += inputs.size(0)
        losses[k] = total_loss / total
    return losses


def flatscape_surface(model, directions, x, inputs, targets, path: Path) -> tuple[np.ndarray, str]:
    """What `flatscape surface` does: batch size auto, then the grid into a fresh HDF5 file."""
    size, _ = fastest_batch_size(model, inputs)
    batches = split_batches(inputs, targets, size)
    spec = SurfaceSpec(x, x, directions, "train", settings={"bench": 1})
    with SurfaceStore.open_for_writing(path, spec, force=True) as store:
        evaluator = SurfaceEvaluator(model, nn.functional.cross_entropy, directions)
        coords = grid_points(store.x, store.y)
        compute_surface(evaluator, {"train": batches}, coords, store.pending(), store.write)
        return store.arrays["train_loss"].reshape(-1), evaluator.vectorize


def timed(cpu: dict, wall: dict, key: str, function, *args):
    """Call ``function(*args)``, append its CPU and wall seconds under ``key``."""
    start_cpu, start_wall = CLOCK(), time.perf_counter()
    result = function(*args)
    cpu[key].append(CLOCK() - start_cpu)
    wall[key].append(time.perf_counter() - start_wall)
    return result


def passes_seconds(model, inputs, targets, batch_size: int, passes: int, loss: bool) -> float:
    """Seconds of ``passes`` no-grad forward passes over the data (with loss and accuracy)."""
    chunks = split_batches(inputs, targets, batch_size)
    start = CLOCK()
    with torch.inference_mode():
        for _ in range(passes):
            for x, y in chunks:
                outputs = model(x)
                if loss:
                    nn.functional.cross_entropy(outputs, y)
                    (outputs.argmax(1) == y).sum()
    return CLOCK() - start


def best_batch_size(model, inputs, targets) -> int:
    """The candidate with the fastest forward pass (best of 3 passes each)."""
    passes_seconds(model, inputs, targets, 500, 1, False)  # warm-up
    seconds = {
        bs: min(passes_seconds(model, inputs, targets, bs, 1, False) for _ in range(3))
        for bs in BATCH_CANDIDATES
    }
    return min(seconds, key=seconds.get)


def bench_model(name, model, inputs, targets, grid: int, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    directions = [random_direction(model, generator) for _ in range(2)]
    x = np.linspace(-1, 1, grid)
    coords = grid_points(x, x)
    dataset = TensorDataset(inputs, targets)
    times = {"loop": [], "flatscape": [], "bound": [], "bound_loss": []}
    wall = {"loop": [], "flatscape": []}
    best_sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            reference = timed(
                times, wall, "loop", loss_landscape_loop, model, directions, coords, dataset
            )
            values, vectorize = timed(
                times, wall, "flatscape", flatscape_surface,
                model, directions, x, inputs, targets, Path(tmp) / "s.h5",
            )  # fmt: skip
            best = best_batch_size(model, inputs, targets)
            best_sizes.append(best)
            for key, loss in (("bound", False), ("bound_loss", True)):
                times[key].append(passes_seconds(model, inputs, targets, best, len(coords), loss))
            np.testing.assert_allclose(values, reference, rtol=1e-4)  # same numbers
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "points": len(coords),
        "loop": med["loop"],
        "flatscape": med["flatscape"],
        "bound": med["bound"],
        "speedup": med["loop"] / med["flatscape"],
        "over_bound": med["flatscape"] / med["bound"],
        "bound_loss": med["bound_loss"],
        "over_bound_loss": med["flatscape"] / med["bound_loss"],
        "best_batch": statistics.mode(best_sizes),
        "vectorize": vectorize,
        "spread": {k: (min(v), max(v)) for k, v in times.items()},
        "wall": {k: statistics.median(v) for k, v in wall.items()},
    }


def vmap_against_loop(widths=(32, 100, 512), batch_sizes=(16, 64, 256, 1024), points=32):
    """Seconds for ``points`` grid points on one batch: the loop against ``vmap``."""
    rows = []
    for width in widths:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 10),
        ).eval()  # fmt: skip
        generator = torch.Generator().manual_seed(0)
        directions = [random_direction(model, generator) for _ in range(2)]
        coords = np.random.default_rng(0).uniform(-1, 1, (points, 2))
        for size in batch_sizes:
            batch = [(torch.randn(size, 40), torch.randint(0, 10, (size,)))]
            seconds = {}
            for mode in ("never", "always"):
                evaluator = SurfaceEvaluator(model, nn.functional.cross_entropy, directions, mode)
                evaluator.evaluate(batch, coords[:2])  # warm-up
                runs = []
                for _ in range(5):
                    start = CLOCK()
                    evaluator.evaluate(batch, coords)
                    runs.append(CLOCK() - start)
                seconds[mode] = statistics.median(runs)
            rows.append((width, size, seconds["never"], seconds["always"]))
    return rows


def wall_of(*command: str) -> float:
    """Wall seconds of a whole process (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def loop_child(checkpoint: str, grid: int) -> None:
    """A whole process that does what loss-landscape does: load, then the plain loop."""
    from distill.sources import load_for_analysis

    loaded = load_for_analysis(checkpoint, samples=4000, batch_size=4000)
    model = loaded.model.eval()
    generator = torch.Generator().manual_seed(0)
    directions = [random_direction(model, generator) for _ in range(2)]
    x = np.linspace(-1, 1, grid)
    loss_landscape_loop(model, directions, grid_points(x, x), TensorDataset(*loaded.batches[0]))


def cli_rows(grid: int, repeats: int, inputs, targets) -> list[str]:
    """``flatscape surface`` as a user runs it, against the forward bound at its threads."""
    flatscape = str(Path(sys.executable).with_name("flatscape"))
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = f"{tmp}/teacher.safetensors"
        subprocess.run([flatscape, "train", "--epochs", "10", "--out", checkpoint, "--quiet"],
                       check=True, capture_output=True)  # fmt: skip
        from distill.sources import load_for_analysis

        model = load_for_analysis(checkpoint, samples=4000, batch_size=4000).model.eval()
        axis = f"-1:1:{grid}"
        for threads in (None, 1):
            flags = [] if threads is None else ["--threads", str(threads)]
            torch.set_num_threads(threads or DEFAULT_THREADS)
            size = best_batch_size(model, inputs, targets)
            runs = {"command": [], "startup": [], "bound": [], "pass": [], "loop": []}
            for _ in range(repeats):
                runs["command"].append(wall_of(
                    flatscape, "surface", checkpoint, "--x", axis, "--y", axis, "--samples",
                    "4000", "--out", f"{tmp}/s.h5", "--force", "--quiet", *flags,
                ))  # fmt: skip
                runs["startup"].append(wall_of(
                    flatscape, "surface", checkpoint, "--x", "0:0:1", "--samples", "4000",
                    "--batch-size", str(size), "--out", f"{tmp}/one.h5", "--force", "--quiet",
                    *flags,
                ))  # fmt: skip
                loop = [sys.executable, __file__, "--loop-child", checkpoint, "--grid", str(grid)]
                runs["loop"].append(wall_of(*loop, *(["--child-threads", str(threads)]
                                                     if threads else [])))  # fmt: skip
                start = time.perf_counter()
                passes_seconds(model, inputs, targets, size, grid * grid, False)
                runs["bound"].append(time.perf_counter() - start)
                start = time.perf_counter()
                passes_seconds(model, inputs, targets, size, 1, False)
                runs["pass"].append(time.perf_counter() - start)
            m = {k: statistics.median(v) for k, v in runs.items()}
            startup = m["startup"] - m["pass"]
            label = f"{threads} thread" if threads else f"default ({DEFAULT_THREADS} threads)"
            lines.append(
                f"| {label} | {m['command']:.2f} | {startup:.2f} | {m['command'] - startup:.2f} "
                f"| {m['bound']:.2f} | {(m['command'] - startup) / m['bound']:.2f} | {size} "
                f"| {m['loop']:.2f} | {m['loop'] / m['command']:.2f}x |"
            )
    torch.set_num_threads(1)
    return lines


DEFAULT_THREADS = torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=21, help="points per axis")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="teacher training epochs")
    parser.add_argument("--no-cli", dest="cli", action="store_false",
                        help="skip the whole-command rows")  # fmt: skip
    parser.add_argument("--only-cli", action="store_true", help="only the whole-command rows")
    parser.add_argument("--loop-child", metavar="CKPT", help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_child:
        if args.child_threads:
            torch.set_num_threads(args.child_threads)
        loop_child(args.loop_child, args.grid)
        return
    torch.set_num_threads(1)
    bundle = load_dataset("mnist1d")
    inputs, targets = bundle.train_eval.tensors
    if args.cli:
        cli = cli_rows(args.grid, args.repeats, inputs, targets)
        print(f"flatscape surface CKPT --x -1:1:{args.grid} --y -1:1:{args.grid} --samples 4000 "
              f"(cnn1d), whole process, wall seconds, median of {args.repeats}\n")  # fmt: skip
        print("| threads | command (s) | start-up (s) | command - start-up (s) | "
              "bound: forward (s) | (command - start-up) / bound | best batch | "
              "plain loop, whole process (s) | loop / command |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(cli) + "\n")
    if args.only_cli:
        return
    rows = []
    for arch in ("cnn1d", "mlp"):
        model, meta = train_teacher(bundle, arch=arch, recipe=Recipe(epochs=args.epochs), seed=0)
        rows.append(bench_model(arch, model.eval(), inputs, targets, args.grid, args.repeats))
    print(
        f"{args.grid}x{args.grid} grid, {len(targets)} MNIST-1D train examples, 1 thread, "
        f"CPU seconds, median of {args.repeats} (torch {torch.__version__})\n"
    )
    print(
        "| model | params | loss-landscape loop (s) | flatscape (s) | speedup | "
        "bound: forward (s) | flatscape / bound | bound: forward+loss+acc (s) | "
        "flatscape / that | best batch | vectorize |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:,} | {r['loop']:.2f} | {r['flatscape']:.2f} | "
            f"{r['speedup']:.2f}x | {r['bound']:.2f} | {r['over_bound']:.2f} | "
            f"{r['bound_loss']:.2f} | {r['over_bound_loss']:.2f} | "
            f"{r['best_batch']} | {r['vectorize']} |"
        )
    print()
    for r in rows:
        spread = ", ".join(f"{k} {lo:.2f}-{hi:.2f}" for k, (lo, hi) in r["spread"].items())
        print(f"{r['model']} range over repeats (CPU s): {spread}")
        print(
            f"{r['model']} wall seconds (median): loop {r['wall']['loop']:.2f}, "
            f"flatscape {r['wall']['flatscape']:.2f}"
        )
    print("\nMLP 40-w-w-10, 32 grid points on one batch, CPU ms, median of 5:\n")
    print("| width w | batch | loop (ms) | vmap (ms) | loop / vmap |")
    print("|---|---|---|---|---|")
    for width, size, loop, vmapped in vmap_against_loop():
        print(
            f"| {width} | {size} | {loop * 1e3:.1f} | {vmapped * 1e3:.1f} | {loop / vmapped:.2f} |"
        )


if __name__ == "__main__":
    main()
