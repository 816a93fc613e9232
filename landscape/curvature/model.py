"""The curvature of a model's loss in one call: batches, operator and solvers as ``hessian``.

:func:`model_curvature` takes the examples from a DataLoader, batches them as ``flatscape
hessian`` does, builds the operator and measures it with
:func:`~landscape.curvature.measure.measure_curvature`, so the command line, notebooks
and benchmarks get their numbers from the same place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.curvature.measure import (
    REQUEST_FIELDS,
    CurvatureRequest,
    CurvatureResult,
    measure_curvature,
)
from landscape.curvature.per_layer import per_layer_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator
from landscape.operators.batching import curvature_batches, gather_examples
from landscape.operators.kinds import make_operator
from landscape.operators.mean_loss import ParameterSelection
from landscape.operators.memory import format_size, peak_bytes, resolve_budget


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
    per_layer: bool | CurvatureRequest = False,
    mc_samples: int = 1,
    start: torch.Tensor | None = None,
    **request_fields: object,
) -> CurvatureResult:
    """Top eigenvalues, trace and density of a model's loss curvature, in one call.

    The curvature is that of the *mean* loss over the first ``samples`` examples of
    ``data`` (all of them by default), model in eval mode: batched as ``flatscape
    hessian`` does (:func:`~landscape.operators.batching.curvature_batches`).

    Args:
        model: Any module (left unchanged, no ``.grad``).
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
            operator (shared data and graphs): ``result.per_layer``; a
            :class:`CurvatureRequest` here is the blocks' own request (e.g. top-1 only).
        mc_samples: Labels drawn per prediction for ``operator="fisher"`` (seeded by the
            request's ``seed``).
        start: Warm start of the eigensolver, e.g. the ``eigen.eigenvectors`` of an
            earlier result (:func:`~landscape.curvature.measure.measure_curvature`).
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
    began = time.perf_counter()
    built = policy_operator(
        operator, model, loss_fn, data, samples=samples, batch_size=batch_size,
        max_memory=max_memory, keep_graphs=request.engine != "pyhessian",
        operator_factory=operator_factory, params=params, hvp=hvp, dtype=dtype,
        bn_mode=bn_mode,
        **({"mc_samples": mc_samples, "seed": request.seed} if operator == "fisher" else {}),
    )  # fmt: skip
    result = measure_curvature(built, request, progress, start)
    local = built.local
    if per_layer:
        sizes = [p.numel() for p in local.params]
        blocks = per_layer if isinstance(per_layer, CurvatureRequest) else request
        rows = per_layer_curvature(built, local.model, local.names, sizes, blocks, progress)
        result.per_layer = [row.to_dict() for row in rows]
        result.matvecs = built.matvecs
    result.seconds = time.perf_counter() - began
    result.memory = {
        "budget": built.local.budget.limit if built.local.budget is not None else None,
        "graph_bytes": local.graph_bytes,
        "kept_examples": local.kept_examples,
        "peak": peak_bytes(built.device),
    }
    return result


@in_analysis_mode
def policy_operator(
    kind: str,
    model: nn.Module,
    loss_fn: LossFunction,
    data: Iterable[Batch],
    *,
    samples: int | None = None,
    batch_size: int | None = None,
    max_memory: int | str | None = "auto",
    keep_graphs: bool = True,
    operator_factory: Callable[..., CurvatureOperator] = make_operator,
    **options: object,
) -> CurvatureOperator:
    """The curvature operator ``kind`` over ``data``, built as ``flatscape hessian`` builds it.

    The one batching and memory policy of every measurement of a model (``hessian``,
    ``compare``, the study layer, eigen maps, eigen directions, the GGN split): the first
    ``samples`` examples, cut once into :func:`~landscape.operators.batching.
    curvature_batches` (256-example batches with their graphs kept, or ``batch_size``
    batches rebuilt per product), the kept graphs within the process's ``max_memory``.

    Args:
        kind: ``"hessian"``, ``"ggn"``, ``"fisher"`` or ``"empirical_fisher"``.
        model: Any module.
        loss_fn: Mean loss of a batch.
        data: A DataLoader or list of ``(inputs, targets)`` batches, read in order.
        samples: How many examples (default: all of ``data``).
        batch_size: Batches of this size with graphs rebuilt per product (default: the
            policy's batches with their graphs kept).
        max_memory: The process's budget: ``"auto"``, None (no limit) or bytes.
        keep_graphs: False to rebuild graphs per product whatever the batches (the
            pyhessian engine, which keeps none).
        operator_factory: Builds the operator (the data-parallel wrapper passes its own).
        **options: The operator's own options (``params``, ``hvp``, ``dtype``,
            ``bn_mode``, ``mc_samples``, ``seed``).

    Raises:
        LandscapeInputError: ``max_memory`` given as a size together with ``batch_size``
            (no graph is kept, so the budget would bound nothing), or a budget too small.
    """
    if batch_size is not None and max_memory not in ("auto", None):
        raise LandscapeInputError(
            f"max_memory {format_size(max_memory)}: nothing to bound with batch_size, whose "
            "graphs are rebuilt at every product; pass max_memory (graphs kept within it) or "
            "batch_size"
        )
    inputs, targets = gather_examples(data, samples)
    batches, keep = curvature_batches(inputs, targets, batch_size)
    keep = keep and keep_graphs
    budget = resolve_budget(max_memory, targets.device) if keep else None
    return operator_factory(kind, model, loss_fn, batches, keep_graphs=keep,
                            graph_budget=budget, **options)  # fmt: skip


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
