"""Top eigenvalues, trace and spectral density of a curvature operator, in one call.

:func:`measure_curvature` runs the solvers a :class:`CurvatureRequest` names on *any*
:class:`~landscape.operators.base.CurvatureOperator` (a Hessian, a GGN, a data-parallel
one, a dense matrix). :func:`model_curvature` is the one call from a model, a loss and a
DataLoader: it takes the examples, batches them as ``flatscape hessian`` does, builds the
operator and measures it, so the command line, notebooks and benchmarks get their numbers
from the same place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.curvature.density.slq import SpectralQuadrature, slq
from landscape.curvature.eigen.lanczos import lanczos
from landscape.curvature.eigen.power import power_iteration
from landscape.curvature.eigen.result import EigenResult
from landscape.curvature.trace.hutchinson import hutchinson_trace
from landscape.curvature.trace.meyer2020hutch import hutchpp_trace
from landscape.curvature.trace.result import TraceResult
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator
from landscape.operators.batching import curvature_batches, gather_examples
from landscape.operators.hessian import HessianOperator
from landscape.operators.kinds import make_operator
from landscape.operators.mean_loss import ParameterSelection
from landscape.operators.memory import peak_bytes, resolve_budget

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
        seconds: Wall time, operator set-up included when :func:`model_curvature` ran it.
        batch_size: Examples per batch (the largest batch).
        graphs_kept: Whether products reused kept gradient graphs.
        memory: Set by :func:`model_curvature`: ``budget`` (bytes the kept graphs could
            hold, None: no limit), ``graph_bytes`` (what they held), ``kept_examples``
            (examples whose graphs were kept, the rest rebuilt per product) and ``peak``
            (the process's peak resident bytes, or peak GPU allocation).
        per_layer: Set by :func:`model_curvature` with ``per_layer``: one row per module
            owning parameters (:class:`~landscape.curvature.per_layer.LayerCurvature`,
            as dicts), the same request on its diagonal block.
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


def _eigenpairs(operator: CurvatureOperator, request: CurvatureRequest) -> EigenResult | None:
    if not request.top_k:
        return None
    if request.engine == "power":
        budget = {} if request.max_matvecs is None else {"max_matvecs": request.max_matvecs}
        return power_iteration(
            operator, k=request.top_k, tol=request.tol, seed=request.seed, **budget
        )
    return lanczos(
        operator,
        k=request.top_k,
        which=request.which,
        tol=request.tol,
        max_matvecs=request.max_matvecs,
        block_size=request.block_size,
        seed=request.seed,
    )


def run_solvers(
    operator: CurvatureOperator, request: CurvatureRequest
) -> tuple[EigenResult | None, TraceResult | None, SpectralQuadrature | None]:
    """The eigenpairs, trace and density the request names, by flatscape's solvers."""
    eigen = _eigenpairs(operator, request)
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
) -> CurvatureResult:
    """Measure what ``request`` asks of any curvature operator.

    Args:
        operator: A Hessian, GGN, data-parallel or any other
            :class:`~landscape.operators.base.CurvatureOperator`.
        request: What to measure (default: the top eigenvalue).
        progress: Called with the number of new products (a progress bar's ``update``).

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
    start, spent = time.perf_counter(), operator.matvecs
    if request.engine == "pyhessian":
        eigen, trace, density = _pyhessian(operator, request, progress)
        hvp = "pyhessian"
    else:
        operator.progress = progress
        try:
            eigen, trace, density = run_solvers(operator, request)
        finally:
            operator.progress = None
        hvp = operator.hvp
    if request.engine == "pyhessian":  # PyHessian's own products, not the operator's
        matvecs = sum(r.matvecs for r in (eigen, trace, density) if r is not None)
    else:
        matvecs = operator.matvecs - spent
    batches = getattr(operator, "batches", None)
    return CurvatureResult(
        eigen, trace, density, operator.loss, operator.dim, operator.num_examples, hvp,
        operator.dtype, matvecs, time.perf_counter() - start,
        batch_size=max(len(b[1]) for b in batches) if batches else None,
        graphs_kept=bool(getattr(operator, "graphs_kept", False)) and hvp != "pyhessian",
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


@in_analysis_mode
def model_curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Iterable[Batch],
    request: CurvatureRequest | None = None,
    *,
    operator: str = "hessian",
    samples: int | None = None,
    batch_size: int | None = None,
    max_memory: int | str | None = "auto",
    params: ParameterSelection = None,
    hvp: str | None = None,
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    progress: Callable[[int], object] | None = None,
    operator_factory: Callable[..., CurvatureOperator] = make_operator,
    per_layer: bool = False,
    mc_samples: int = 1,
    **request_fields: object,
) -> CurvatureResult:
    """Top eigenvalues, trace and density of a model's loss curvature, in one call.

    The curvature is that of the *mean* loss over the first ``samples`` examples of
    ``data`` (all of them by default), model in eval mode: batched as ``flatscape
    hessian`` does (:func:`~landscape.operators.batching.curvature_batches`).

    Args:
        model: Any module, in any mode (given back exactly as it was, ``.grad`` included).
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's mean loss.
        data: A DataLoader or a list of ``(inputs, targets)`` batches (read in order;
            shuffle off for reproducible numbers).
        request: What to measure; or give its fields as keywords (``top_k=5``,
            ``trace=True``, ``density=True``, ``engine="power"``, ...).
        operator: ``"hessian"``, ``"ggn"``, ``"fisher"`` (Monte-Carlo) or
            ``"empirical_fisher"``.
        samples: How many examples (default: all of ``data``).
        batch_size: Examples per batch with graphs rebuilt per product (bounded memory);
            default: cache-sized batches with their graphs kept (fastest).
        max_memory: Bytes the kept gradient graphs (Hessian) or linearizations (GGN) may
            hold: ``"auto"`` (half the memory available at the start, RAM or the GPU's),
            None (no limit) or a byte count for the whole process. Batches beyond it are
            rebuilt per product; a single batch larger than the budget raises
            :class:`LandscapeInputError` with the numbers.
        params: Parameter names or tensors (default: all trainable).
        hvp: Hessian-vector product engine (default: double backward on a CPU).
        dtype: Compute dtype, e.g. ``torch.float64`` (default: the model's).
        bn_mode: ``"eval"`` or ``"train"`` BatchNorm.
        progress: Called with the number of new products.
        operator_factory: Builds the operator as
            :func:`~landscape.operators.kinds.make_operator` does (the data-parallel
            wrapper passes its own).
        per_layer: Also the request on each module's diagonal block, on the same
            operator (shared data and graphs): ``result.per_layer``.
        mc_samples: Labels drawn per prediction for ``operator="fisher"`` (seeded by the
            request's ``seed``).
        **request_fields: :class:`CurvatureRequest` fields, when ``request`` is None.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> data = [(torch.randn(32, 4), torch.randint(0, 3, (32,))) for _ in range(4)]
        >>> result = model_curvature(model, nn.functional.cross_entropy, data, top_k=2,
        ...                          trace=True)
        >>> len(result.eigenvalues), result.examples, result.eigen.converged
        (2, 128, True)
    """
    request = _request(request, request_fields)
    start = time.perf_counter()
    inputs, targets = gather_examples(data, samples)
    batches, keep_graphs = curvature_batches(inputs, targets, batch_size)
    keep_graphs = keep_graphs and request.engine != "pyhessian"
    budget = resolve_budget(max_memory, targets.device) if keep_graphs else None
    built = operator_factory(
        operator, model, loss_fn, batches, params=params, hvp=hvp, dtype=dtype,
        bn_mode=bn_mode, keep_graphs=keep_graphs, max_memory=budget,
        **({"mc_samples": mc_samples, "seed": request.seed} if operator == "fisher" else {}),
    )  # fmt: skip
    result = measure_curvature(built, request, progress)
    local = getattr(built, "local", built)
    if per_layer:
        from landscape.curvature.per_layer import per_layer_curvature

        sizes = [p.numel() for p in local.params]
        rows = per_layer_curvature(built, local.model, local.names, sizes, request, progress)
        result.per_layer = [row.to_dict() for row in rows]
        result.matvecs = built.matvecs
    result.seconds = time.perf_counter() - start
    result.memory = {
        "budget": budget,
        "graph_bytes": getattr(local, "graph_bytes", None),
        "kept_examples": getattr(local, "kept_examples", None),
        "peak": peak_bytes(built.device),
    }
    return result


def _request(request: CurvatureRequest | None, given: dict[str, object]) -> CurvatureRequest:
    """The request, from the object or from its fields given as keywords (not both)."""
    unknown = sorted(set(given) - REQUEST_FIELDS)
    if unknown:
        raise LandscapeInputError(
            f"{unknown[0]}: not an option; choose from {', '.join(sorted(REQUEST_FIELDS))}"
        )
    if request is not None and given:
        raise LandscapeInputError("give a CurvatureRequest or its fields as keywords, not both")
    request = request or CurvatureRequest(**given)
    request.check()
    return request
