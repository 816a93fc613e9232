"""A 2D loss surface of your own model: an MLP on scikit-learn's digits, trained in plain torch.

Defines a small ``nn.Module`` here (64 pixels -> hidden -> 10 classes), trains it for a
few epochs with SGD, then evaluates the train and test loss and accuracy on a
``--points`` x ``--points`` grid of weights ``theta + a d_x + b d_y`` along two
filter-normalized random directions, ``a, b`` in [-1, 1] (Li et al., 2018). The grid is
stored in ``surface.h5`` (loss-landscape's layout; ``done`` marks finished points, so a
killed run can be resumed) and drawn as a contour plot, ``surface.png``. The trained
weights are kept as ``model.pt`` (a state dict of :class:`DigitsMLP`).

Run (a 51 x 51 grid, about 15 s on one CPU thread)::

    python examples/custom_model_surface.py --points 51

A quick look::

    python examples/custom_model_surface.py --points 5 --epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import landscape


class DigitsMLP(nn.Module):
    """Two hidden ReLU layers on the 64 pixels of an 8x8 digit."""

    def __init__(self, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))


def digits_split(test_fraction: float = 0.2, seed: int = 0):
    """Standardized digits as ``(x_train, y_train, x_test, y_test)`` tensors (no download)."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, ...]]:
    """Consecutive ``(inputs, targets)`` batches, in order."""
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    """Plain minibatch SGD with momentum on the cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), 64):
            index = order[i : i + 64]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=51, help="grid points per axis")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--hidden", type=int, default=64, help="width of the hidden layers")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/custom_model_surface"))
    parser.add_argument("--seed", type=int, default=0, help="seed of init, order and directions")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    x_train, y_train, x_test, y_test = digits_split(seed=args.seed)
    torch.manual_seed(args.seed)
    model = DigitsMLP(args.hidden)
    train(model, x_train, y_train, args.epochs, args.seed)
    torch.save(model.state_dict(), args.out_dir / "model.pt")

    out_h5 = args.out_dir / "surface.h5"
    result = landscape.loss_surface(
        model,
        F.cross_entropy,
        {"train": batches_of(x_train, y_train, 256), "test": batches_of(x_test, y_test, 256)},
        out_h5,
        x_range=f"-1:1:{args.points}",
        y_range=f"-1:1:{args.points}",
        split="both",
        seed=args.seed,
        force=True,
    )
    print(
        f"surface: {result.points} points ({result.computed} computed) in {result.seconds:.2f} s,"
        f" shape {result.shape}, batch size {result.batch_size}, vectorize {result.vectorize}"
    )
    if result.origin is not None:
        origin = result.origin
        print(f"origin train_loss = {origin['train_loss']:.6f}")
        print(f"origin test_loss = {origin['test_loss']:.6f}")
        print(f"origin train_acc = {origin['train_acc']:.2f} %")
        print(f"origin test_acc = {origin['test_acc']:.2f} %")
    else:
        print("the grid does not contain the origin (use an odd --points)")
    out_png = landscape.plot_surfaces([out_h5], args.out_dir / "surface.png", kind="contour")
    print(f"wrote {out_h5} and {out_png}")


if __name__ == "__main__":
    main()
