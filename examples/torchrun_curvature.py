"""Hessian eigenvalues and trace with the examples split over the processes of a torchrun job.

Every process holds the same model and passes the same data to
``landscape.data_parallel_curvature``; each keeps a contiguous share of the first
``--samples`` examples and every Hessian-vector product is all-reduced, so every process
gets the numbers of one process over all the examples (up to rounding). Rank 0 trains a
cnn1d on MNIST-1D for ``--epochs`` and sends the weights to the others; only rank 0
prints. The process group (gloo on CPUs) is joined first with
``landscape.distributed.process.init_from_env``.

Run on 4 processes of one machine::

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 4 examples/torchrun_curvature.py --samples 4000

The same script without torchrun runs in one process and prints the same eigenvalues::

    python examples/torchrun_curvature.py --samples 4000
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import distill
import landscape
from landscape.distributed import process

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="examples, split over ranks")
    parser.add_argument("--epochs", type=int, default=30, help="epochs rank 0 trains for")
    parser.add_argument("--top-k", type=int, default=2, help="top eigenvalues")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and probes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    return parser.parse_args(argv)


def trained_model(bundle: distill.DatasetBundle, epochs: int, seed: int) -> torch.nn.Module:
    """Rank 0 trains; every rank gets its architecture and weights by broadcast."""
    sent = None
    if process.is_main():
        model, meta = distill.train_teacher(bundle, recipe=distill.Recipe(epochs=epochs), seed=seed)
        sent = (meta["arch"], meta["arch_kwargs"], model.state_dict())
    arch, kwargs, state = process.broadcast_object(sent)
    model = distill.build_model(arch, **kwargs)
    model.load_state_dict(state)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = process.init_from_env("cpu")

    bundle = distill.load_dataset("mnist1d")
    model = trained_model(bundle, args.epochs, args.seed).to(device)
    x, y = bundle.train_eval.tensors
    batches = [(x[i : i + 500], y[i : i + 500]) for i in range(0, len(y), 500)]
    request = landscape.CurvatureRequest(top_k=args.top_k, trace=True, seed=args.seed)
    result = landscape.data_parallel_curvature(
        model, F.cross_entropy, batches, request, samples=args.samples,
        dtype=DTYPES[args.dtype],
    )  # fmt: skip

    if process.is_main():
        world = process.world_size()
        print(f"processes {world}, examples {result.examples} in all, {result.dim} parameters")
        print(f"loss {result.loss:.10g}")
        print("eigenvalues " + " ".join(f"{v:.10g}" for v in result.eigenvalues))
        print("residuals " + " ".join(f"{r:.3e}" for r in result.eigen.residuals.tolist()))
        print(f"trace {result.trace.estimate:.10g} +- {result.trace.stderr:.3g}")
        print(f"matvecs {result.matvecs} in {result.seconds:.2f} s")


if __name__ == "__main__":
    main()
