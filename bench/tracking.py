"""What tracking sharpness costs a training run: `flatscape train` with and without it.

Runs ``flatscape train`` on the default MNIST-1D teacher (cnn1d) for ``--epochs`` epochs,
plain and with ``--track-every-epoch`` (the documented default: one lambda_1 per epoch on
the first 256 train examples, tolerance 1e-3), the same with ``--track-tol 1e-2``, and
with ``--track-sharpness 10``, as whole processes in interleaved repeats; prints the
median wall times, their ratios to the plain run (measured in the same run), and from
the tracked logs the Hessian-vector products per measurement (the first, cold, and the
mean of the later, warm-started ones).

Then the floor of any exact measurement, measured in this process on the plain run's
checkpoint at the same thread count: one gradient with its graph kept plus two
Hessian-vector products on the 256 probe examples (the fewest a certified Lanczos
spends), against the plain run's median epoch (its log's ``seconds``: the epoch's steps
and its test evaluation).

Run: ``python bench/tracking.py`` (``--epochs 10 --repeats 3 --threads 1``; ``--threads
0``: torch's default, what a user's command gets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain": [],
    "--track-every-epoch": ["--track-every-epoch"],
    "--track-every-epoch --track-tol 1e-2": ["--track-every-epoch", "--track-tol", "1e-2"],
    "--track-sharpness 10": ["--track-sharpness", "10"],
}


def _stem(name: str) -> str:
    return name.replace("--", "").replace(" ", "_")


def train_seconds(folder: Path, name: str, flags: list[str], args: argparse.Namespace,
                  repeat: int) -> float:  # fmt: skip
    """Wall time of one whole `flatscape train` process (it must succeed)."""
    out = folder / f"{_stem(name)}_{repeat}.safetensors"
    threads = ["--threads", str(args.threads)] if args.threads else []
    command = [sys.executable, "-m", "cli.main", "train", "--epochs", str(args.epochs),
               *threads, "--quiet", "--out", str(out), *flags]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def products(folder: Path, name: str) -> tuple[int, int, float]:
    """From the first repeat's log: measurements, the first one's products, the later mean."""
    records = _log(folder, name)
    tracked = [r["matvecs"] for r in records if "lambda_1" in r]
    return len(tracked), tracked[0], statistics.mean(tracked[1:] or [0])


def _log(folder: Path, name: str, repeat: int = 0) -> list[dict]:
    log = folder / f"{_stem(name)}_{repeat}.log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def floor(folder: Path, threads: int, repeats: int) -> dict[str, float]:
    """Seconds of an epoch (plain runs' logs), a kept-graph gradient, then two products."""
    import torch
    import torch.nn.functional as F

    from distill.checkpoint import load_checkpoint
    from distill.data import load_dataset
    from distill.sources import first_examples
    from landscape.operators.hessian import HessianOperator

    if threads:
        torch.set_num_threads(threads)
    epochs = [r["seconds"] for k in range(repeats) for r in _log(folder, "plain", k)]
    model, _ = load_checkpoint(folder / f"{_stem('plain')}_0.safetensors")
    model.eval()
    probe = first_examples(load_dataset("mnist1d").train_eval, 256, 256)
    gradient, two = [], []
    for _ in range(10):  # as a measurement does: a fresh operator, then two products
        start = time.perf_counter()
        operator = HessianOperator(model, F.cross_entropy, probe)  # gradient, graph kept
        built = time.perf_counter()
        for _ in range(2):
            operator.matmat(torch.randn(operator.dim, 1))
        gradient.append(built - start)
        two.append(time.perf_counter() - built)
    return {"epoch": statistics.median(epochs), "gradient": statistics.median(gradient),
            "two products": statistics.median(two)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="0: torch's default")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="flatscape-tracking-"))
    os.environ.setdefault("FLATSCAPE_CACHE", str(folder / "cache"))
    train_seconds(folder, "warm-up", [], argparse.Namespace(**{**vars(args), "epochs": 1}), 0)
    times = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, flags in VARIANTS.items():
            times[name].append(train_seconds(folder, name, flags, args, repeat))
    base = statistics.median(times["plain"])
    threads = args.threads or "torch's default"
    print(f"flatscape train, mnist1d cnn1d, {args.epochs} epochs, {args.repeats} interleaved "
          f"repeats, threads: {threads}")  # fmt: skip
    print("| run | median wall s | ratio to plain | measurements | products first / later mean |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        median = statistics.median(times[name])
        cost = "- | -" if name == "plain" else "{} | {} / {:.2f}".format(*products(folder, name))
        print(f"| {name} | {median:.2f} | {median / base:.3f} | {cost} |")
    parts = floor(folder, args.threads, args.repeats)
    least = parts["gradient"] + parts["two products"]
    print(
        f"\nplain epoch {parts['epoch'] * 1e3:.0f} ms (median of its log); on the 256 probe "
        f"examples: gradient with graph {parts['gradient'] * 1e3:.1f} ms, then two products "
        f"{parts['two products'] * 1e3:.1f} ms; the fewest a measurement spends = "
        f"{least * 1e3:.0f} ms = {least / parts['epoch']:.1%} of an epoch"
    )


if __name__ == "__main__":
    main()
