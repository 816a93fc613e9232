"""Does ``--tol`` bound the error? Lanczos against the dense float64 spectrum, many seeds.

The models of ``tests/landscape/curvature/test_tolerance.py`` (an MLP and a cnn1d on
MNIST-1D, a BatchNorm CNN on the 8x8 digits; each seed a new initialisation, training
subset and start vector), run by ``lanczos`` from a random start (what
``model_curvature`` and ``flatscape hessian`` do) and, for comparison, from the unit
gradient plus a unit random vector (the start used before). Prints per model, k and tol
the worst error / tol, the number of seeds whose error exceeded tol and the mean products.

    python bench/tolerance.py                 # 20 seeds, 64 examples (the test's setting)
    python bench/tolerance.py --seeds 40 --examples 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.landscape.curvature.test_tolerance as study  # noqa: E402
from distill.data import load_dataset  # noqa: E402
from landscape.curvature.eigen import lanczos  # noqa: E402
from landscape.operators.hessian import HessianOperator  # noqa: E402


def gradient_plus_random(operator: HessianOperator, seed: int) -> torch.Tensor:
    noise = torch.randn(operator.dim, generator=torch.Generator().manual_seed(seed + 1))
    gradient = operator.gradient()
    return noise / noise.norm() + gradient / gradient.norm()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--examples", type=int, default=study.EXAMPLES)
    args = parser.parse_args()
    study.EXAMPLES = args.examples
    torch.set_num_threads(1)
    datasets = {name: load_dataset(name).train.tensors for name in ("mnist1d", "digits")}
    starts = {"random": lambda op, s: None, "gradient+random": gradient_plus_random}
    rows: dict[tuple, list[tuple[float, int]]] = {}
    for kind in study.MODELS:
        for seed in range(args.seeds):
            model, batches = study.trained(kind, seed, datasets)
            exact = study.exact_spectrum(model, batches)
            operator = HessianOperator(model, F.cross_entropy, batches)
            for start_name, start in starts.items():
                for k in (1, 5):
                    for tol in (1e-2, 1e-3):
                        result = lanczos(operator, k=k, tol=tol, seed=seed,
                                         start=start(operator, seed))  # fmt: skip
                        error = (result.eigenvalues.double() - exact[:k]).abs() / exact[:k]
                        rows.setdefault((kind, start_name, k, tol), []).append(
                            (float(error.abs().max()) / tol, result.matvecs)
                        )
    print(f"torch {torch.__version__}, 1 thread; {args.seeds} seeds, {args.examples} examples")
    print(f"{'model':<14} {'start':<16} {'k':>2} {'tol':>6} {'worst err/tol':>14} "
          f"{'seeds > tol':>11} {'mean products':>14}")  # fmt: skip
    for (kind, start_name, k, tol), values in rows.items():
        worst = max(v[0] for v in values)
        failures = sum(v[0] > 1 for v in values)
        products = statistics.mean(v[1] for v in values)
        print(f"{kind:<14} {start_name:<16} {k:>2} {tol:>6.0e} {worst:14.3g} "
              f"{failures:>11} {products:14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
