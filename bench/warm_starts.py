"""Warm against cold starts of tracked lambda_1, along one and the same training run.

Full-batch gradient descent on MSE (examples/track_sharpness.py: a tanh MLP on the first
1000 digits) at each learning rate; after every ``--every`` steps two trackers measure
the same weights, one warm-started from its previous vector, one from a random vector.
Prints per learning rate the mean Hessian-vector products per measurement after the
first, their ratio, and the largest relative difference of the two lambda_1 (both are
certified to ``tol`` = 1e-3).

Run: ``python bench/warm_starts.py`` (``--lrs 0.2,0.05 --steps 1500 --every 25``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.track_sharpness import digits, half_squared_error  # noqa: E402
from landscape.tracking import SharpnessTracker  # noqa: E402


def compare(lr: float, data: tuple, steps: int, every: int) -> dict[str, float]:
    """Products and lambda_1 of warm and cold trackers on one gradient-descent run."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 10))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    warm = SharpnessTracker([data], half_squared_error, every=every)
    cold = SharpnessTracker([data], half_squared_error, every=every, warm_start=False)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        half_squared_error(model(data[0]), data[1]).backward()
        optimizer.step()
        warm.step(model, step=step, lr=lr)
        cold.step(model, step=step, lr=lr)
    pairs = list(zip(warm.records, cold.records, strict=True))[1:]
    return {
        "warm": statistics.mean(w["matvecs"] for w, _ in pairs),
        "cold": statistics.mean(c["matvecs"] for _, c in pairs),
        "difference": max(abs(w["lambda_1"] - c["lambda_1"]) / c["lambda_1"] for w, c in pairs),
        "measurements": len(pairs) + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="0.2,0.05")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = digits(1000)
    print("| lr | measurements | products warm | products cold | warm / cold | max rel. diff |")
    print("|---|---|---|---|---|---|")
    for lr in (float(v) for v in args.lrs.split(",")):
        r = compare(lr, data, args.steps, args.every)
        print(f"| {lr:g} | {r['measurements']} | {r['warm']:.2f} | {r['cold']:.2f} | "
              f"{r['warm'] / r['cold']:.2f} | {r['difference']:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
