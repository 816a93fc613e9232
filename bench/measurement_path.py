"""`compare` against `hessian`: the same lambda_1, in the same time, on one measurement path.

Issue 23 asked that every command measure curvature as ``flatscape hessian`` does (the
examples cut once into batches of 256 with their gradient graphs kept, under the memory
budget). This prints, per model, the top eigenvalue and the CPU time of

- ``hessian``: :func:`landscape.model_curvature`, as ``flatscape hessian`` calls it;
- ``compare``: :func:`landscape.compare.profile.curvature`, as ``flatscape compare`` (and
  ``reproduce``, the sweep) measure each model,

on the same model and examples, one thread, interleaved repeat by repeat (medians), and
the ratio compare / hessian.

    python bench/measurement_path.py                     # cnn1d and the trained resnet20
    python bench/measurement_path.py --models cnn1d --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curvature import clock, cnn1d_teacher, resnet20_trained  # noqa: E402

from landscape.compare.profile import ProfileSettings  # noqa: E402
from landscape.compare.profile import curvature as compare_curvature  # noqa: E402
from landscape.curvature.model import model_curvature  # noqa: E402


def hessian_path(model, batches):
    result = model_curvature(model, F.cross_entropy, batches, top_k=1, tol=1e-3)
    return result.eigenvalues[0], result.matvecs


def compare_path(model, batches):
    found = compare_curvature(model, F.cross_entropy, batches,
                              ProfileSettings(top_k=1, trace_matvecs=0))  # fmt: skip
    return found["lambda_1"], found["hvps"]


def report(name: str, model, batches, note: str, repeats: int) -> None:
    print(f"\n## {name}: {note}; {sum(len(y) for _, y in batches)} examples")
    times = {"hessian": [], "compare": []}
    values = {}
    for _ in range(repeats):  # interleaved: load on the machine hits both alike
        for path, run in (("hessian", hessian_path), ("compare", compare_path)):
            (value, products), _, cpu = clock(lambda run=run: run(model, batches))
            times[path].append(cpu)
            values[path] = (value, products)
    print(f"{'path':<10}{'lambda_1':>14}{'products':>10}{'CPU s (median)':>16}")
    for path in ("hessian", "compare"):
        value, products = values[path]
        print(f"{path:<10}{value:>14.6f}{products:>10}{statistics.median(times[path]):>16.2f}")
    ratio = statistics.median(times["compare"]) / statistics.median(times["hessian"])
    relative = abs(values["compare"][0] - values["hessian"][0]) / abs(values["hessian"][0])
    print(f"compare / hessian CPU time: {ratio:.2f}x; lambda_1 relative difference "
          f"{relative:.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn1d", "resnet20"],
                        choices=["cnn1d", "resnet20"])  # fmt: skip
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; CPU seconds of this process")
    makers = {"cnn1d": cnn1d_teacher, "resnet20": resnet20_trained}
    for name in args.models:
        model, batches, note = makers[name](args.samples)
        report(name, model, batches, note, args.repeats)


if __name__ == "__main__":
    main()
