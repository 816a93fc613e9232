"""Sharpness while training, in a plain loop: the edge of stability (Cohen et al., 2021).

Full-batch gradient descent (no momentum) on the mean squared error of a small tanh MLP
on the first ``--examples`` scikit-learn digits (one-hot targets, 1/2 the squared norm per
example). A :class:`landscape.tracking.SharpnessTracker` measures lambda_1 of the training
loss every ``--every`` steps, warm-started from its previous vector. With a large step
size lambda_1 rises to 2/lr and hovers there; with a small one it stays below.

Writes ``OUT_DIR/lr_<LR>.log.jsonl`` (one record per measurement) and ``sharpness.png``
(``flatscape plot OUT_DIR/*.log.jsonl`` draws the same), and prints per learning rate::

    lr 0.2: 2/lr 10, lambda_1 last 10.3, max 12.8, median of the last quarter 10.7 (x 1.07 of
    2/lr), products per measurement after the first 10

Run: ``python examples/track_sharpness.py --lrs 0.5,0.2,0.05 --steps 1500 --out-dir eos``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from landscape.tracking import SharpnessTracker
from landscape.tracking.plot import plot_sharpness


def half_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Half the squared error per example, summed over classes, mean over the batch."""
    return 0.5 * ((outputs - targets) ** 2).sum(dim=1).mean()


def digits(examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first digits, pixels scaled to [0, 1], one-hot targets."""
    x, y = load_digits(return_X_y=True)
    inputs = torch.tensor(x[:examples] / 16.0, dtype=torch.float32)
    return inputs, nn.functional.one_hot(torch.tensor(y[:examples]), 10).float()


def train(lr: float, data: tuple, steps: int, every: int, width: int, log: Path) -> list[dict]:
    """Full-batch gradient descent from a fixed init; the tracker's records."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, 10))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with open(log, "w") as handle:
        write = lambda record: handle.write(json.dumps(record) + "\n")  # noqa: E731
        tracker = SharpnessTracker([data], half_squared_error, every=every, log=write)
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            loss = half_squared_error(model(data[0]), data[1])
            loss.backward()
            optimizer.step()
            tracker.step(model, step=step, lr=lr, momentum=0.0, loss=float(loss.detach()))
    return tracker.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="0.5,0.2,0.05", help="Learning rates, comma-separated.")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=25, help="Measure every N steps.")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--out-dir", default="eos")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = digits(args.examples)
    logs = []
    for lr in (float(v) for v in args.lrs.split(",")):
        logs.append(out / f"lr_{lr:g}.log.jsonl")
        records = train(lr, data, args.steps, args.every, args.width, logs[-1])
        values = [r["lambda_1"] for r in records]
        median = statistics.median(values[-max(1, len(values) // 4) :])
        products = [r["matvecs"] for r in records[1:]]
        print(
            f"lr {lr:g}: 2/lr {2 / lr:.6g}, lambda_1 last {values[-1]:.6g}, max {max(values):.6g}, "
            f"median of the last quarter {median:.6g} (x {median * lr / 2:.3f} of 2/lr), "
            f"products per measurement after the first {statistics.mean(products or [0]):.3g}"
        )
    figure = plot_sharpness(logs, out / "sharpness.png")
    print(f"wrote {figure}")


if __name__ == "__main__":
    main()
