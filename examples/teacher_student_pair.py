"""Teacher and self-distilled student as a pair: barrier, Bezier curve, agreement, CKA.

Trains a teacher on MNIST-1D, distils a born-again student from its checkpoint (KD at
temperature 4, alpha 1), then asks whether the two are connected and compute the same
function, on the first ``--samples`` training examples and the test split:

- the loss barrier on the straight line teacher -> student (BatchNorm-free cnn1d here;
  for BatchNorm models the running statistics are recomputed at every point),
- the largest loss on a trained quadratic Bezier curve between them (stored, resumable,
  in ``curve.h5``; ``flatscape plot curve.h5`` draws it),
- top-1 agreement and KL(teacher || student), and linear CKA per layer.

Run (a real run, a few minutes on one CPU thread)::

    python examples/teacher_student_pair.py --epochs 40 --samples 1024 --curve-steps 300

A quick look (seconds)::

    python examples/teacher_student_pair.py --epochs 2 --samples 256 --curve-steps 20 --threads 1

Checkpoints, ``curve.h5`` and ``pair.json`` go to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import distill
import landscape


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs of teacher and student")
    parser.add_argument("--samples", type=int, default=1024, help="training examples used")
    parser.add_argument("--curve-steps", type=int, default=300, help="SGD steps of the curve")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/teacher_student_pair"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the teacher")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def train_pair(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """The teacher, its born-again student and the data, checkpoints saved in ``out_dir``."""
    bundle = distill.load_dataset("mnist1d")
    teacher, meta = distill.train_teacher(
        bundle, recipe=distill.Recipe(epochs=args.epochs), seed=args.seed
    )
    path = distill.save_checkpoint(args.out_dir / "teacher.safetensors", teacher, meta)
    student, student_meta = distill.train_student(
        path, distill.KDConfig(temperature=4.0, alpha=1.0),
        recipe=distill.Recipe(epochs=args.epochs, lr=0.025),
    )  # fmt: skip
    distill.save_checkpoint(args.out_dir / "student.safetensors", student, student_meta)
    return teacher, student, bundle


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    teacher, student, bundle = train_pair(args)
    x, y = bundle.train_eval.tensors
    data = {"train": [(x[: args.samples], y[: args.samples])], "test": [bundle.test.tensors]}

    line = landscape.linear_path(teacher, student, F.cross_entropy, data)
    settings = landscape.CurveSettings(steps=args.curve_steps)
    curve = landscape.bezier_curve(teacher, student, F.cross_entropy, data,
                                   args.out_dir / "curve.h5", settings, force=True)  # fmt: skip
    fidelity = {split: landscape.function_agreement(teacher, student, batches)
                for split, batches in data.items()}  # fmt: skip
    cka = landscape.layer_cka(teacher, student, data["train"])

    report = {
        "barrier": {s: line.loss_barrier(s) for s in data},
        "barrier_accuracy": {s: line.accuracy_barrier(s) for s in data},
        "line_max_loss": line.max_loss(),
        "curve_max_loss": curve.values.max_loss(),
        "end_losses": [float(line.loss["train"][0]), float(line.loss["train"][-1])],
        "agreement": {s: f.agreement for s, f in fidelity.items()},
        "kl": {s: f.kl for s, f in fidelity.items()},
        "cka": cka,
    }
    (args.out_dir / "pair.json").write_text(json.dumps(report, indent=2))
    print(f"over {args.samples} training examples and the {len(data['test'][0][1])} test ones")
    print(f"end losses (train) {report['end_losses'][0]:.4f} {report['end_losses'][1]:.4f}")
    print(f"barrier (train, test) {line.loss_barrier('train'):.4f} {line.loss_barrier('test'):.4f}")
    print(f"max loss (line, curve) {line.max_loss():.4f} {curve.values.max_loss():.4f}")
    print(f"agreement (train, test) {fidelity['train'].agreement:.4f} "
          f"{fidelity['test'].agreement:.4f}")  # fmt: skip
    print(f"kl (train, test) {fidelity['train'].kl:.5f} {fidelity['test'].kl:.5f}")
    print("cka " + " ".join(f"{v:.4f}" for v in cka.values()) + f"  ({', '.join(cka)})")


if __name__ == "__main__":
    main()
