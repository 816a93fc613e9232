"""Is a self-distilled student flatter than its teacher? Top Hessian eigenvalues and trace.

Trains a teacher on MNIST-1D (hard labels), distils a born-again student from its
checkpoint (same architecture, fresh init, KD at temperature 4 with alpha 1, i.e. soft
targets only), and measures the curvature of both models' mean cross-entropy on the
same first ``--samples`` training examples: the top three Hessian eigenvalues (Lanczos)
and the Hutch++ trace estimate with its standard error.

Run (a real run, about two minutes on one CPU thread)::

    python examples/teacher_vs_student_sharpness.py --epochs 60 --samples 4000

A quick look (a few seconds)::

    python examples/teacher_vs_student_sharpness.py --epochs 3 --samples 256 --threads 1

The checkpoints (``teacher.safetensors``, ``student.safetensors``) and the numbers
(``curvature.json``) go to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import distill
import landscape


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs of teacher and student")
    parser.add_argument(
        "--samples", type=int, default=4000, help="training examples the curvature is over"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("runs/teacher_vs_student"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the teacher")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def measure(model: torch.nn.Module, batches: list, samples: int) -> landscape.CurvatureResult:
    """Top-3 eigenvalues and trace of the mean cross-entropy over the first examples."""
    return landscape.model_curvature(
        model, torch.nn.functional.cross_entropy, batches, top_k=3, trace=True, samples=samples
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    bundle = distill.load_dataset("mnist1d")
    teacher, teacher_meta = distill.train_teacher(
        bundle, recipe=distill.Recipe(epochs=args.epochs), seed=args.seed
    )
    teacher_path = distill.save_checkpoint(
        args.out_dir / "teacher.safetensors", teacher, teacher_meta
    )
    student, student_meta = distill.train_student(
        teacher_path,
        distill.KDConfig(temperature=4.0, alpha=1.0),
        recipe=distill.Recipe(epochs=args.epochs, lr=0.025),
    )
    distill.save_checkpoint(args.out_dir / "student.safetensors", student, student_meta)

    # The training split in dataset order, unaugmented; model_curvature takes its first
    # `samples` examples (a DataLoader with shuffle=False would do as well).
    batches = [bundle.train_eval.tensors]
    rows = []
    for name, model, meta in [
        ("teacher", teacher, teacher_meta),
        ("student", student, student_meta),
    ]:
        result = measure(model, batches, args.samples)
        rows.append({
            "model": name,
            "test_accuracy": meta["metrics"]["test_accuracy"],
            "train_loss": result.loss,
            "eigenvalues": result.eigenvalues,
            "residuals": result.eigen.residuals.tolist(),
            "trace": result.trace.estimate,
            "trace_stderr": result.trace.stderr,
            "examples": result.examples,
            "matvecs": result.matvecs,
            "seconds": result.seconds,
        })  # fmt: skip

    print(f"curvature of the mean cross-entropy over {rows[0]['examples']} training examples")
    header = f"{'model':<8} {'test acc':>8} {'train loss':>11} {'lambda_1':>11} "
    header += f"{'lambda_2':>11} {'lambda_3':>11} {'trace':>24}"
    print(header)
    for row in rows:
        lambdas = " ".join(f"{v:11.5g}" for v in row["eigenvalues"])
        trace = f"{row['trace']:.5g} +- {row['trace_stderr']:.2g}"
        print(
            f"{row['model']:<8} {row['test_accuracy']:8.4f} {row['train_loss']:11.5g} "
            f"{lambdas} {trace:>24}"
        )
    ratio = rows[1]["eigenvalues"][0] / rows[0]["eigenvalues"][0]
    print(f"student lambda_1 / teacher lambda_1 = {ratio:.3f}")
    out = args.out_dir / "curvature.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
