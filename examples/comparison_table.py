"""A teacher and its chain of self-distilled students, profiled the same way, in one table.

Trains a cnn1d teacher on MNIST-1D and ``--generations`` born-again students (each
distilled from the previous generation at T=4, alpha=1), then measures every model with
one :class:`landscape.ProfileSettings` on the same first ``--samples`` training examples:
train loss, test accuracy, the top two Hessian eigenvalues, the Hutch++ trace and the
width of the 1D filter-normalized basin. Prints a Markdown table with each measure's
relative change against the teacher, and writes it, a CSV and the full records (JSON)
to ``--out-dir``.

Run (about a minute and a half on one CPU thread)::

    python examples/comparison_table.py --epochs 60 --generations 2 --samples 2000

A quick look::

    python examples/comparison_table.py --epochs 2 --generations 1 --samples 200 --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import distill
import landscape

CHANGED = ["lambda_1", "trace", "test_accuracy"]
COLUMNS = [
    "name", "train_loss", "test_accuracy", "test_accuracy_change", "lambda_1",
    "lambda_1_change", "trace", "trace_change", "surface_width",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs of every model")
    parser.add_argument("--generations", type=int, default=2, help="student generations")
    parser.add_argument("--samples", type=int, default=2000, help="training examples measured")
    parser.add_argument("--test-samples", type=int, default=1000, help="test examples measured")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/comparison_table"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the teacher")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def first_batches(dataset, count: int, size: int = 500) -> list[tuple[torch.Tensor, ...]]:
    """The first ``count`` examples of a TensorDataset as consecutive batches."""
    x, y = (t[:count] for t in dataset.tensors)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def train_chain(bundle: distill.DatasetBundle, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The teacher and its students as ``(name, checkpoint)``, in generation order."""
    model, meta = distill.train_teacher(
        bundle, recipe=distill.Recipe(epochs=args.epochs), seed=args.seed
    )
    chain = [("teacher", distill.save_checkpoint(args.out_dir / "gen0.safetensors", model, meta))]
    for generation in range(1, args.generations + 1):
        model, meta = distill.train_student(
            chain[-1][1],
            distill.KDConfig(temperature=4.0, alpha=1.0),
            recipe=distill.Recipe(epochs=args.epochs, lr=0.025),
        )
        path = args.out_dir / f"gen{generation}.safetensors"
        chain.append((f"student-{generation}", distill.save_checkpoint(path, model, meta)))
    return chain


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    bundle = distill.load_dataset("mnist1d")
    chain = train_chain(bundle, args)
    train_batches = first_batches(bundle.train_eval, args.samples)
    test_batches = first_batches(bundle.test, args.test_samples)
    settings = landscape.ProfileSettings(top_k=2, trace_matvecs=30, line_points=11)

    records = []
    for name, path in chain:
        model, _ = distill.load_checkpoint(path)
        record = landscape.profile_model(
            model, F.cross_entropy, train_batches, settings, test_batches=test_batches
        )
        records.append({"name": name, "checkpoint": str(path), **record})

    rows = landscape.with_changes(records, CHANGED, reference=0)
    table = landscape.to_markdown(rows, COLUMNS)
    print(table, end="")
    (args.out_dir / "comparison.md").write_text(table)
    (args.out_dir / "comparison.csv").write_text(landscape.to_csv(rows, COLUMNS))
    (args.out_dir / "records.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote comparison.md, comparison.csv and records.json to {args.out_dir}")


if __name__ == "__main__":
    main()
