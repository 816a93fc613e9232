"""Running the ``pyhessian`` package itself, so published PyHessian numbers can be reproduced.

PyHessian 0.1 computes the Hessian of the size-weighted mean loss over the batches
(one batch: its ``data=`` mode with the gradient graph reused; several: ``dataloader=``),
always in eval mode. Its defects on torch 2.13 are contained here:

- it calls ``model.eval()`` and leaves ``.grad`` tensors holding a graph: it only ever
  sees a deep copy of the model, whose gradients are dropped afterwards;
- ``density()`` calls the removed ``torch.eig``: a symmetric ``torch.linalg.eigh`` stands
  in for it during the call;
- ``trace()`` stops as soon as the running mean is negative (its relative test divides
  by the mean): it is called with ``tol=-inf``, so it runs exactly the probes asked for;
- its random vectors come from torch's global generator in the default dtype: they are
  drawn from a seeded, forked generator with the default dtype set to the model's.

Products are counted by wrapping PyHessian's own HVP functions.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from landscape._types import Batch, LossFunction
from landscape.curvature.density.slq import SpectralQuadrature
from landscape.curvature.eigen.result import EigenResult
from landscape.curvature.trace.result import TraceResult
from landscape.errors import LandscapeInputError


class _Counter:
    """Products PyHessian spent, reported to an optional progress callback."""

    def __init__(self, progress: Callable[[int], object] | None) -> None:
        self.count = 0
        self.progress = progress

    def add(self) -> None:
        self.count += 1
        if self.progress is not None:
            self.progress(1)


def _eig_with_eigh(matrix: torch.Tensor, eigenvectors: bool = False):
    """``torch.eig`` of torch < 1.9 for the symmetric matrices PyHessian passes it."""
    values, vectors = torch.linalg.eigh(matrix)
    return torch.stack([values, torch.zeros_like(values)], dim=1), vectors


@contextmanager
def pyhessian_session(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    seed: int = 0,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], object] | None = None,
) -> Iterator[tuple[object, _Counter]]:
    """A ``pyhessian.hessian`` object on a copy of ``model``, and a counter of its HVPs."""
    import pyhessian  # noqa: F401  (the module object is reached through sys.modules)

    module = sys.modules["pyhessian.hessian"]
    if not batches:
        raise LandscapeInputError("batches: need at least one (inputs, targets) batch")
    first = next(model.parameters())
    dtype = dtype or first.dtype
    twin = copy.deepcopy(model).to(dtype)
    batches = [
        tuple(t.to(dtype) if t.is_floating_point() else t for t in batch) for batch in batches
    ]
    counter = _Counter(progress)
    original_hvp, original_eig = module.hessian_vector_product, getattr(torch, "eig", None)

    def counted_hvp(*args, **kwargs):
        counter.add()
        return original_hvp(*args, **kwargs)

    default_dtype = torch.get_default_dtype()
    devices = [first.device.index or 0] if first.device.type == "cuda" else []
    try:
        module.hessian_vector_product = counted_hvp
        torch.eig = _eig_with_eigh
        torch.set_default_dtype(dtype)
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
            torch.manual_seed(seed)
            single = len(batches) == 1
            engine = module.hessian(
                twin,
                loss_fn,
                data=batches[0] if single else None,
                dataloader=None if single else batches,
                cuda=first.device.type == "cuda",
            )
            if not single:
                loop = engine.dataloader_hv_product

                def counted_loop(v: list[torch.Tensor]) -> tuple:
                    counter.add()
                    return loop(v)

                engine.dataloader_hv_product = counted_loop
            yield engine, counter
    finally:
        module.hessian_vector_product = original_hvp
        if original_eig is None:
            del torch.eig
        else:
            torch.eig = original_eig
        torch.set_default_dtype(default_dtype)
        for p in twin.parameters():
            p.grad = None


def _product(engine: object, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """PyHessian's HVP (graph reuse for one batch, its loop over batches otherwise)."""
    module = sys.modules["pyhessian.hessian"]
    if engine.full_dataset:
        return engine.dataloader_hv_product(vectors)[1]
    return module.hessian_vector_product(engine.gradsH, engine.params, vectors)


def pyhessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], object] | None = None,
) -> EigenResult:
    r"""PyHessian's ``eigenvalues(maxIter, tol, top_n=k)``, plus the residual of each pair.

    ``matvecs`` counts PyHessian's products and the ``k`` more that the residuals
    :math:`\\lVert H v - \\lambda v \\rVert` of its returned pairs cost.
    """
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not 1 <= k <= dim:
        raise LandscapeInputError(f"k={k}: must be between 1 and the parameter count {dim}")
    with pyhessian_session(model, loss_fn, batches, seed, dtype, progress) as (engine, counter):
        values, vectors = engine.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        spent = counter.count
        residuals = []
        for value, vector in zip(values, vectors, strict=True):
            products = _product(engine, vector)
            residuals.append(
                math.sqrt(
                    sum(
                        float(((h - value * v) ** 2).sum())
                        for h, v in zip(products, vector, strict=True)
                    )
                )
            )
        columns = [torch.cat([v.reshape(-1) for v in vector]).detach() for vector in vectors]
        matvecs = counter.count
    return EigenResult(
        torch.tensor(values, dtype=columns[0].dtype),
        torch.stack(columns, dim=1),
        torch.tensor(residuals, dtype=columns[0].dtype),
        matvecs,
        converged=spent < max_iter * k,
        engine="pyhessian",
    )


def pyhessian_trace(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    matvecs: int = 99,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], object] | None = None,
) -> TraceResult:
    """PyHessian's Hutchinson ``trace()``, run for exactly ``matvecs`` probes."""
    if matvecs < 1:
        raise LandscapeInputError(f"trace_matvecs {matvecs}: need at least 1")
    with pyhessian_session(model, loss_fn, batches, seed, dtype, progress) as (engine, counter):
        samples = torch.tensor(engine.trace(maxIter=matvecs, tol=float("-inf")))
        matvecs = counter.count
    stderr = float(samples.std() / math.sqrt(len(samples))) if len(samples) > 1 else 0.0
    return TraceResult(float(samples.mean()), stderr, matvecs, "pyhessian")


def pyhessian_density(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    probes: int = 1,
    steps: int = 100,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], object] | None = None,
) -> SpectralQuadrature:
    """PyHessian's SLQ ``density(iter=steps, n_v=probes)``, as nodes and weights.

    No reorthogonalisation of its own beyond what PyHessian does.
    """
    with pyhessian_session(model, loss_fn, batches, seed, dtype, progress) as (engine, counter):
        nodes, weights = engine.density(iter=steps, n_v=probes)
        matvecs = counter.count
    return SpectralQuadrature(
        torch.tensor(nodes, dtype=torch.float64),
        torch.tensor(weights, dtype=torch.float64),
        matvecs,
    )
