"""One call that measures a model's curvature: top eigenvalues, trace and spectral density.

:func:`measure_curvature` picks the solvers a :class:`CurvatureRequest` names and runs them
on one :class:`~landscape.hessian.HessianOperator` (or on the ``pyhessian`` package), so
the command line, the notebooks and the benchmarks get their numbers from the same place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.density.slq import SpectralQuadrature, slq
from landscape.eigen.lanczos import lanczos
from landscape.eigen.power import power_iteration
from landscape.eigen.result import EigenResult
from landscape.errors import LandscapeInputError
from landscape.hessian import Batch, HessianOperator, LossFunction, mean_loss
from landscape.operator import CurvatureOperator
from landscape.pyhessian_engine import pyhessian_density, pyhessian_eigenvalues, pyhessian_trace
from landscape.trace.hutchinson import hutchinson_trace
from landscape.trace.meyer2020hutch import hutchpp_trace
from landscape.trace.result import TraceResult

METHODS = ("lanczos", "power", "pyhessian")
TRACE_METHODS = {"hutchinson": hutchinson_trace, "hutchpp": hutchpp_trace}


@dataclass(frozen=True)
class CurvatureRequest:
    """What to measure and how.

    Attributes:
        top_k: Number of top eigenpairs (0: none).
        which: ``"largest"`` or ``"smallest"`` algebraic (Lanczos only).
        method: ``"lanczos"`` (default), ``"power"`` (PyHessian's algorithm, flatscape's
            code) or ``"pyhessian"`` (the package itself, also for trace and density).
        tol: Relative tolerance of the eigenvalues (see :func:`~landscape.eigen.lanczos`
            and :func:`~landscape.eigen.power_iteration` for what each method tests).
        trace: Estimate the trace.
        trace_method: ``"hutchpp"`` or ``"hutchinson"`` (``method="pyhessian"`` always
            uses PyHessian's Hutchinson).
        probes: Products the trace estimate may spend.
        density: Estimate the spectral density by SLQ.
        density_steps: Lanczos steps per SLQ probe.
        density_probes: SLQ probes.
        seed: Seed of every random vector.
        block_size: Vectors per operator product (batched HVPs).
    """

    top_k: int = 1
    which: str = "largest"
    method: str = "lanczos"
    tol: float = 1e-3
    trace: bool = False
    trace_method: str = "hutchpp"
    probes: int = 99
    density: bool = False
    density_steps: int = 100
    density_probes: int = 1
    seed: int = 0
    block_size: int = 1

    def check(self, dim: int | None = None) -> None:
        """Raise :class:`LandscapeInputError` for a request that cannot be run.

        Without ``dim`` (the parameter count) the upper bound of ``top_k`` is not checked.
        """
        checks = [
            (self.method in METHODS, f"engine {self.method!r}: choose {', '.join(METHODS)}"),
            (self.top_k >= 0, f"top-k {self.top_k}: must be >= 0"),
            (dim is None or self.top_k <= dim,
             f"top-k {self.top_k}: exceeds the number of parameters, {dim}"),
            (self.which in ("largest", "smallest"), f"which {self.which!r}: largest or smallest"),
            (self.which == "largest" or self.method == "lanczos",
             f"smallest eigenvalues need the lanczos engine, not {self.method}"),
            (self.tol > 0, f"tol {self.tol}: must be > 0"),
            (self.trace_method in TRACE_METHODS,
             f"trace method {self.trace_method!r}: choose hutchinson or hutchpp"),
            (self.probes >= (3 if self.trace_method == "hutchpp" else 1),
             f"probes {self.probes}: {self.trace_method} needs at least "
             f"{3 if self.trace_method == 'hutchpp' else 1}"),
            (self.density_steps >= 1 and self.density_probes >= 1,
             "density steps and probes must be >= 1"),
            (self.block_size >= 1, f"block size {self.block_size}: must be >= 1"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise LandscapeInputError(message)


@dataclass
class CurvatureResult:
    """Everything :func:`measure_curvature` measured, with its cost."""

    eigen: EigenResult | None
    trace: TraceResult | None
    density: SpectralQuadrature | None
    loss: float
    dim: int
    examples: int
    hvp: str
    dtype: torch.dtype
    matvecs: int
    seconds: float


def gradient_start(operator: HessianOperator, seed: int) -> Tensor:
    """Lanczos start vector: the unit gradient plus a unit random vector.

    Near a minimum the gradient lies mostly in the top eigenspace, which saves Lanczos
    steps; the random half keeps every eigenvector in reach.
    """
    noise = torch.randn(operator.dim, generator=torch.Generator().manual_seed(seed + 1))
    noise = noise.to(device=operator.device, dtype=operator.dtype)
    start = noise / noise.norm()
    gradient = operator.gradient()
    norm = gradient.norm()
    if torch.isfinite(norm) and norm > 0:
        start = start + gradient / norm
    return start


def _flatscape(operator: HessianOperator, request: CurvatureRequest):
    eigen = trace = density = None
    if request.top_k and request.method == "lanczos":
        eigen = lanczos(
            operator,
            k=request.top_k,
            which=request.which,
            tol=request.tol,
            block_size=request.block_size,
            seed=request.seed,
            start=gradient_start(operator, request.seed),
        )
    elif request.top_k:
        eigen = power_iteration(operator, k=request.top_k, tol=request.tol, seed=request.seed)
    if request.trace:
        estimator = TRACE_METHODS[request.trace_method]
        trace = estimator(operator, request.probes, request.seed, request.block_size)
    if request.density:
        density = slq(
            operator,
            request.density_probes,
            request.density_steps,
            request.seed,
            request.block_size,
        )
    return eigen, trace, density


def _pyhessian(model, loss_fn, batches, request: CurvatureRequest, dtype, progress):
    args = (model, loss_fn, batches)
    eigen = trace = density = None
    if request.top_k:
        eigen = pyhessian_eigenvalues(
            *args, k=request.top_k, tol=request.tol, seed=request.seed, dtype=dtype,
            progress=progress,
        )  # fmt: skip
    if request.trace:
        trace = pyhessian_trace(
            *args, num_matvecs=request.probes, seed=request.seed, dtype=dtype, progress=progress
        )
    if request.density:
        density = pyhessian_density(
            *args, num_probes=request.density_probes, steps=request.density_steps,
            seed=request.seed, dtype=dtype, progress=progress,
        )  # fmt: skip
    return eigen, trace, density


def measure_curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    request: CurvatureRequest,
    hvp: str = "double_backward",
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    progress: Callable[[int], object] | None = None,
    operator_factory: Callable[..., CurvatureOperator] = HessianOperator,
    keep_graphs: bool | None = None,
) -> CurvatureResult:
    """Measure the curvature of the mean loss of ``model`` over ``batches``.

    Args:
        model: Any module (left unchanged).
        loss_fn: Mean-reduced loss ``loss_fn(outputs, targets)``.
        batches: Fixed ``(inputs, targets)`` batches; batch ``k`` weighs ``n_k / N``.
        request: What to measure.
        hvp: HVP engine of :class:`HessianOperator` (ignored by ``method="pyhessian"``).
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"`` BatchNorm (PyHessian supports eval only).
        progress: Called with the number of new Hessian-vector products.
        operator_factory: Builds the operator from ``(model, loss_fn, batches, engine=,
            dtype=, bn_mode=)``; :func:`landscape.data_parallel.data_parallel` makes one
            for data split across processes (``batches`` are then this process's share).
        keep_graphs: Passed to :class:`HessianOperator` when given: keep every batch's
            gradient graph (the default keeps it for a single batch only).
    """
    start = time.perf_counter()
    batches = list(batches)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    request.check(dim)
    if request.method == "pyhessian":
        if bn_mode != "eval":
            raise LandscapeInputError("the pyhessian engine runs BatchNorm in eval mode only")
        loss = mean_loss(model, loss_fn, batches)
        eigen, trace, density = _pyhessian(model, loss_fn, batches, request, dtype, progress)
        dtype = dtype or next(model.parameters()).dtype
        matvecs = sum(r.matvecs for r in (eigen, trace, density) if r is not None)
        hvp_used, examples = "pyhessian", sum(len(y) for _, y in batches)
    else:
        options = {} if keep_graphs is None else {"keep_graphs": keep_graphs}
        operator = operator_factory(
            model, loss_fn, batches, engine=hvp, dtype=dtype, bn_mode=bn_mode, **options
        )
        operator.progress = progress
        eigen, trace, density = _flatscape(operator, request)
        loss, dtype, matvecs = operator.loss, operator.dtype, operator.matvecs
        hvp_used, examples = operator.engine, operator.num_examples
    return CurvatureResult(
        eigen, trace, density, loss, dim, examples, hvp_used, dtype, matvecs,
        time.perf_counter() - start,
    )  # fmt: skip
