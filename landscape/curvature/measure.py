"""Top eigenvalues, trace and spectral density of a curvature operator, in one call.

:func:`measure_curvature` runs the solvers a :class:`CurvatureRequest` names on *any*
:class:`~landscape.operators.base.CurvatureOperator` (a Hessian, a GGN, a data-parallel
one, a dense matrix). The one call from a model, a loss and a DataLoader is
:func:`~landscape.curvature.model.model_curvature`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from landscape.curvature.density.slq import SpectralQuadrature, slq
from landscape.curvature.eigen.lanczos import lanczos
from landscape.curvature.eigen.power import power_iteration
from landscape.curvature.eigen.result import EigenResult
from landscape.curvature.trace.hutchinson import hutchinson_trace
from landscape.curvature.trace.meyer2020hutch import hutchpp_trace
from landscape.curvature.trace.result import TraceResult
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator
from landscape.operators.hessian import HessianOperator

ENGINES = ("lanczos", "power", "pyhessian")
TRACE_METHODS = {"hutchinson": hutchinson_trace, "hutchpp": hutchpp_trace}


@dataclass(frozen=True)
class CurvatureRequest:
    """What to measure and how (the defaults are ``flatscape hessian``'s).

    Attributes:
        top_k: Number of top eigenpairs (0: none).
        which: ``"largest"`` or ``"smallest"`` algebraic (Lanczos only).
        engine: The eigensolver: ``"lanczos"`` (default), ``"power"`` (PyHessian's
            algorithm, flatscape's code) or ``"pyhessian"`` (the package itself, also for
            trace and density; Hessian only).
        tol: Relative tolerance of the eigenvalues (see
            :func:`~landscape.curvature.eigen.lanczos.lanczos` and
            :func:`~landscape.curvature.eigen.power.power_iteration` for what each tests).
        max_matvecs: Product budget of the eigensolver (default: its own).
        trace: Estimate the trace.
        trace_method: ``"hutchpp"`` or ``"hutchinson"`` (``engine="pyhessian"`` always
            uses PyHessian's Hutchinson).
        trace_matvecs: Products the trace estimate may spend.
        density: Estimate the spectral density by SLQ.
        density_steps: Lanczos steps per SLQ probe.
        density_probes: SLQ probes.
        seed: Seed of every random vector.
        block_size: Vectors per operator product (batched HVPs).
    """

    top_k: int = 1
    which: str = "largest"
    engine: str = "lanczos"
    tol: float = 1e-3
    max_matvecs: int | None = None
    trace: bool = False
    trace_method: str = "hutchpp"
    trace_matvecs: int = 99
    density: bool = False
    density_steps: int = 100
    density_probes: int = 1
    seed: int = 0
    block_size: int = 1

    def check(self, dim: int | None = None) -> None:
        """Raise :class:`LandscapeInputError` for a request that cannot be run.

        Without ``dim`` (the parameter count) the upper bound of ``top_k`` is not checked.
        Messages name the request's fields (``top_k``, ``trace_matvecs``, ...).
        """
        least = 3 if self.trace_method == "hutchpp" else 1
        checks = [
            (self.engine in ENGINES, f"engine {self.engine!r}: choose {', '.join(ENGINES)}"),
            (self.top_k >= 0, f"top_k {self.top_k}: must be >= 0"),
            (dim is None or self.top_k <= dim,
             f"top_k {self.top_k}: exceeds the number of parameters, {dim}"),
            (self.which in ("largest", "smallest"), f"which {self.which!r}: largest or smallest"),
            (self.which == "largest" or self.engine == "lanczos",
             f"smallest eigenvalues need the lanczos engine, not {self.engine}"),
            (self.tol > 0, f"tol {self.tol}: must be > 0"),
            (self.max_matvecs is None or self.max_matvecs > self.top_k,
             f"max_matvecs {self.max_matvecs}: must exceed top_k {self.top_k}"),
            (self.trace_method in TRACE_METHODS,
             f"trace_method {self.trace_method!r}: choose hutchinson or hutchpp"),
            (self.trace_matvecs >= least,
             f"trace_matvecs {self.trace_matvecs}: {self.trace_method} needs at least {least}"),
            (self.density_steps >= 1, f"density_steps {self.density_steps}: must be >= 1"),
            (self.density_probes >= 1, f"density_probes {self.density_probes}: must be >= 1"),
            (self.block_size >= 1, f"block_size {self.block_size}: must be >= 1"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise LandscapeInputError(message)


REQUEST_FIELDS = frozenset(f.name for f in fields(CurvatureRequest))


@dataclass
class CurvatureResult:
    """Everything :func:`measure_curvature` measured, with its cost.

    Attributes:
        eigen: Eigenpairs with residuals and convergence, or None.
        trace: Trace estimate with its standard error, or None.
        density: SLQ nodes and weights, or None.
        loss: Mean loss at the weights (None for a plain matrix).
        dim: Parameters the operator is taken over.
        examples: Examples the loss is the mean over.
        hvp: How products were computed (``"double_backward"``, ``"ggn/cross_entropy"``,
            ``"pyhessian"``).
        dtype: Compute dtype.
        matvecs: Operator products spent in all.
        seconds: Wall time, operator set-up included when
            :func:`~landscape.curvature.model.model_curvature` ran it.
        batch_size: Examples per batch (the largest batch).
        graphs_kept: Whether products reused kept gradient graphs.
        memory: Set by :func:`~landscape.curvature.model.model_curvature`: ``budget``
            (bytes the kept graphs could hold, None: no limit), ``graph_bytes`` (what
            they held), ``kept_examples`` (examples whose graphs were kept, the rest
            rebuilt per product) and ``peak`` (the process's peak resident bytes, or peak
            GPU allocation).
        per_layer: Set by :func:`~landscape.curvature.model.model_curvature` with
            ``per_layer``: one row per module owning parameters
            (:class:`~landscape.curvature.per_layer.LayerCurvature`, as dicts), the same
            request on its diagonal block.
    """

    eigen: EigenResult | None
    trace: TraceResult | None
    density: SpectralQuadrature | None
    loss: float | None
    dim: int
    examples: int | None
    hvp: str
    dtype: torch.dtype
    matvecs: int
    seconds: float
    batch_size: int | None = None
    graphs_kept: bool = False
    memory: dict[str, int | None] | None = None
    per_layer: list[dict[str, Any]] | None = None

    @property
    def eigenvalues(self) -> list[float]:
        """The eigenvalues as floats, largest first (empty without ``top_k``)."""
        return [] if self.eigen is None else self.eigen.eigenvalues.tolist()


def _eigenpairs(
    operator: CurvatureOperator, request: CurvatureRequest, start: Tensor | None = None
) -> EigenResult | None:
    if not request.top_k:
        return None
    if request.engine == "power":
        budget = {} if request.max_matvecs is None else {"max_matvecs": request.max_matvecs}
        return power_iteration(
            operator, k=request.top_k, tol=request.tol, seed=request.seed, start=start, **budget
        )
    return lanczos(
        operator,
        k=request.top_k,
        which=request.which,
        tol=request.tol,
        max_matvecs=request.max_matvecs,
        block_size=request.block_size,
        seed=request.seed,
        start=start,
    )


def run_solvers(
    operator: CurvatureOperator, request: CurvatureRequest, start: Tensor | None = None
) -> tuple[EigenResult | None, TraceResult | None, SpectralQuadrature | None]:
    """The eigenpairs (from ``start``, if given), trace and density the request names."""
    eigen = _eigenpairs(operator, request, start)
    trace = density = None
    if request.trace:
        estimator = TRACE_METHODS[request.trace_method]
        trace = estimator(operator, request.trace_matvecs, request.seed, request.block_size)
    if request.density:
        density = slq(
            operator, request.density_probes, request.density_steps, request.seed,
            request.block_size,
        )  # fmt: skip
    return eigen, trace, density


def measure_curvature(
    operator: CurvatureOperator,
    request: CurvatureRequest | None = None,
    progress: Callable[[int], object] | None = None,
    start: Tensor | None = None,
) -> CurvatureResult:
    """Measure what ``request`` asks of any curvature operator.

    Args:
        operator: A Hessian, GGN, data-parallel or any other
            :class:`~landscape.operators.base.CurvatureOperator`.
        request: What to measure (default: the top eigenvalue).
        progress: Called with the number of new products (a progress bar's ``update``).
        start: Warm start of the eigensolver, ``(dim,)`` or ``(dim, c)``: e.g. the
            ``eigen.eigenvectors`` of an earlier result on a nearby operator (see
            :func:`~landscape.curvature.eigen.lanczos.lanczos`); the tolerance is certified
            as from a random start. Not for ``engine="pyhessian"``.

    Returns:
        The results with their cost; ``matvecs`` counts this call's products only.

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64)))
        >>> result = measure_curvature(A, CurvatureRequest(top_k=2, tol=1e-10))
        >>> [round(v, 8) for v in result.eigenvalues]
        [20.0, 19.0]
    """
    request = request or CurvatureRequest()
    request.check(operator.dim)
    if start is not None and request.engine == "pyhessian":
        raise LandscapeInputError("start: the pyhessian engine takes no start; use lanczos")
    began, spent = time.perf_counter(), operator.matvecs
    if request.engine == "pyhessian":
        eigen, trace, density = _pyhessian(operator, request, progress)
        hvp = "pyhessian"
    else:
        operator.progress = progress
        try:
            eigen, trace, density = run_solvers(operator, request, start)
        finally:
            operator.progress = None
        hvp = operator.hvp
    if request.engine == "pyhessian":  # PyHessian's own products, not the operator's
        matvecs = sum(r.matvecs for r in (eigen, trace, density) if r is not None)
    else:
        matvecs = operator.matvecs - spent
    batches = operator.batches
    return CurvatureResult(
        eigen, trace, density, operator.loss, operator.dim, operator.num_examples, hvp,
        operator.dtype, matvecs, time.perf_counter() - began,
        batch_size=max(len(b[1]) for b in batches) if batches else None,
        graphs_kept=operator.graphs_kept and hvp != "pyhessian",
    )  # fmt: skip


def _pyhessian(
    operator: CurvatureOperator,
    request: CurvatureRequest,
    progress: Callable[[int], object] | None,
) -> tuple[EigenResult | None, TraceResult | None, SpectralQuadrature | None]:
    """PyHessian itself on the Hessian operator's model, loss and batches."""
    if not isinstance(operator, HessianOperator):
        raise LandscapeInputError(
            "engine pyhessian measures the Hessian of one process only; use lanczos or power"
        )
    if operator.bn_mode != "eval":
        raise LandscapeInputError("engine pyhessian runs BatchNorm in eval mode only")
    if getattr(operator.loss_fn, "count", None) is not None:
        raise LandscapeInputError(
            "engine pyhessian weights batches by their examples, and this loss is a mean over "
            "the tokens it counts; use engine lanczos or power"
        )
    every = [name for name, p in operator.model.named_parameters() if p.requires_grad]
    if operator.names != every:
        raise LandscapeInputError(
            "engine pyhessian measures every trainable parameter; a parameter block "
            "(params) needs engine lanczos or power"
        )
    from landscape.curvature import pyhessian  # imported only when this engine is chosen

    args = (operator.model, operator.loss_fn, operator.batches)
    options = {"seed": request.seed, "dtype": operator.dtype, "progress": progress}
    eigen = trace = density = None
    if request.top_k:
        eigen = pyhessian.pyhessian_eigenvalues(*args, k=request.top_k, tol=request.tol, **options)
    if request.trace:
        trace = pyhessian.pyhessian_trace(*args, matvecs=request.trace_matvecs, **options)
    if request.density:
        density = pyhessian.pyhessian_density(
            *args, probes=request.density_probes, steps=request.density_steps, **options
        )
    return eigen, trace, density
