"""Your own network and data, from train to distill to compare to surface to plot, in Python.

The network is ``examples/own_model/residual_net.py:ResidualMLP`` (LayerNorm, residual
blocks: not a flatscape model), the data scikit-learn's 8x8 digits written to a ``.npz``
as a user would bring their own arrays. The script trains a teacher, distils two
generations from it, measures each checkpoint's top Hessian eigenvalues, Hutch++ trace
and accuracy on the same train examples, and draws the teacher's 2D loss surface. It uses
only the public API (``distill``, ``landscape``); ``docs/own-models.md`` runs the same
steps as ``flatscape`` commands.

Run::

    python examples/own_model/walkthrough.py --out runs/own

A quick look::

    python examples/own_model/walkthrough.py --out /tmp/own --epochs 3 --width 16 --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import landscape
from distill import KDConfig, Recipe, save_checkpoint, train_student, train_teacher
from distill.sources import Sources, load_for_analysis
from distill.user_data import load_npz

NET = str(Path(__file__).resolve().with_name("residual_net.py")) + ":ResidualMLP"


def write_digits(path: Path) -> Path:
    """scikit-learn's digits as x_train, y_train, x_test, y_test (first 1437 / last 360)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    np.savez(path, x_train=x[:1437], y_train=y[:1437], x_test=x[1437:], y_test=y[1437:],
             classes=np.array([str(c) for c in range(10)]))  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--samples", type=int, default=512, help="Train examples measured.")
    parser.add_argument("--points", type=int, default=11, help="Surface grid per axis.")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    bundle = load_npz(write_digits(args.out / "digits.npz"))
    recipe = Recipe(epochs=args.epochs, lr=0.05, batch_size=64)
    kwargs = {"inputs": 64, "width": args.width, "classes": 10}
    model, meta = train_teacher(bundle, arch=NET, recipe=recipe, seed=0, arch_overrides=kwargs)
    paths = [save_checkpoint(args.out / "teacher.safetensors", model, meta)]
    for generation in (1, 2):
        student, meta = train_student(paths[-1], KDConfig(temperature=4.0, alpha=1.0),
                                      recipe=Recipe(epochs=args.epochs, lr=0.0125,
                                                    batch_size=64, warmup_epochs=1),
                                      named_model=NET)  # fmt: skip
        paths.append(save_checkpoint(args.out / f"gen{generation}.safetensors", student, meta))

    print(f"{'model':<8}{'test acc':>10}{'train loss':>12}{'lambda_1':>11}{'lambda_2':>11}"
          f"{'trace':>10}")  # fmt: skip
    for path in paths:
        loaded = load_for_analysis(path, samples=args.samples, sources=Sources(model=NET))
        curvature = landscape.model_curvature(
            loaded.model, F.cross_entropy, loaded.batches, top_k=2, trace=True,
            trace_matvecs=60, seed=0,
        )  # fmt: skip
        metrics = loaded.metadata["metrics"]
        print(f"{path.stem:<8}{metrics['test_accuracy']:>10.4f}{curvature.loss:>12.6f}"
              f"{curvature.eigenvalues[0]:>11.5f}{curvature.eigenvalues[1]:>11.5f}"
              f"{curvature.trace.estimate:>10.3f}")  # fmt: skip

    teacher = load_for_analysis(paths[0], samples=args.samples, sources=Sources(model=NET))
    grid = f"-1:1:{args.points}"
    surface = landscape.loss_surface(
        teacher.model, F.cross_entropy, teacher.batches, args.out / "teacher.h5",
        x_range=grid, y_range=grid, force=True,
    )  # fmt: skip
    figure = args.out / "teacher.png"
    landscape.plot_surfaces([surface.out], figure, kind="contour")
    print(f"surface {surface.out}: {surface.points} points; origin loss "
          f"{surface.origin['train_loss']:.6f}; figure {figure}")  # fmt: skip


if __name__ == "__main__":
    main()
