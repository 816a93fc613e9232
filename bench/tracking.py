"""What tracking sharpness costs a training run: `flatscape train` with and without it.

Runs ``flatscape train`` on the default MNIST-1D teacher (cnn1d) for ``--epochs`` epochs,
plain and with ``--track-every-epoch`` (the documented default: one lambda_1 per epoch on
the first 256 train examples), and with ``--track-sharpness 10``, as whole processes in
interleaved repeats on one thread; prints the median wall times, their ratios to the
plain run (measured in the same run), and from the tracked logs the Hessian-vector
products per measurement (the first, cold, and the mean of the later, warm-started ones).

Run: ``python bench/tracking.py`` (``--epochs 10 --repeats 3``).
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
    "--track-sharpness 10": ["--track-sharpness", "10"],
}


def train_seconds(folder: Path, name: str, flags: list[str], epochs: int, repeat: int) -> float:
    """Wall time of one whole `flatscape train` process (it must succeed)."""
    out = folder / f"{name.strip('-').replace(' ', '_')}_{repeat}.safetensors"
    command = [sys.executable, "-m", "cli.main", "train", "--epochs", str(epochs), "--threads",
               "1", "--quiet", "--out", str(out), *flags]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def products(folder: Path, name: str) -> tuple[int, int, float]:
    """From the first repeat's log: measurements, the first one's products, the later mean."""
    log = folder / f"{name.strip('-').replace(' ', '_')}_0.log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    tracked = [r["matvecs"] for r in records if "lambda_1" in r]
    return len(tracked), tracked[0], statistics.mean(tracked[1:] or [0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="flatscape-tracking-"))
    os.environ.setdefault("FLATSCAPE_CACHE", str(folder / "cache"))
    train_seconds(folder, "warm-up", [], 1, 0)  # the dataset cache, outside the timings
    times = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, flags in VARIANTS.items():
            times[name].append(train_seconds(folder, name, flags, args.epochs, repeat))
    base = statistics.median(times["plain"])
    print(f"flatscape train, mnist1d cnn1d, {args.epochs} epochs, {args.repeats} interleaved "
          "repeats, 1 thread")  # fmt: skip
    print("| run | median wall s | ratio to plain | measurements | products first / later mean |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        median = statistics.median(times[name])
        cost = "- | -" if name == "plain" else "{} | {} / {:.2f}".format(*products(folder, name))
        print(f"| {name} | {median:.2f} | {median / base:.3f} | {cost} |")


if __name__ == "__main__":
    main()
