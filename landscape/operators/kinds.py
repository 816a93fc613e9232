"""The curvature matrices flatscape measures, by name: one constructor for the CLI and the API."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.operators.fisher import FisherOperator
from landscape.operators.ggn import GGNOperator, OutputHessian
from landscape.operators.hessian import HessianOperator
from landscape.operators.mean_loss import MeanLossOperator, ParameterSelection

OPERATORS = {
    "hessian": HessianOperator, "ggn": GGNOperator, "fisher": FisherOperator,
    "empirical_fisher": FisherOperator,
}  # fmt: skip


@in_analysis_mode
def make_operator(
    kind: str,
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    *,
    params: ParameterSelection = None,
    hvp: str | None = None,
    output_hessian: str | OutputHessian = "auto",
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    keep_graphs: bool | None = None,
    graph_budget: int | None = None,
    mc_samples: int = 1,
    seed: int = 0,
    example_offset: int = 0,
) -> MeanLossOperator:
    """The curvature matrix ``kind``: Hessian, GGN, Monte-Carlo or empirical Fisher.

    Args:
        kind: ``"hessian"``, ``"ggn"``, ``"fisher"`` (Monte-Carlo) or ``"empirical_fisher"``
            (:mod:`landscape.operators.fisher`).
        model: Any module.
        loss_fn: Mean loss of a batch.
        batches: ``(inputs, targets)`` pairs.
        hvp: Hessian-vector product engine (Hessian only; default ``"double_backward"``
            on a CPU, ``"auto"`` elsewhere).
        output_hessian: The GGN's output-space curvature (GGN only).
        params: Parameter names or tensors (default: all trainable).
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"`` BatchNorm.
        keep_graphs: Keep every batch's graphs for all products (default: one batch only).
        graph_budget: Bytes the kept graphs (Hessian) or linearizations (GGN, Fisher) and
            a product's working memory may hold (default: no limit); batches beyond it
            are rebuilt per product. Not the process's ``max_memory`` of the facades:
            :func:`~landscape.operators.memory.resolve_budget` turns that into this.
        mc_samples: Labels drawn per prediction for the Monte-Carlo Fisher.
        seed: Seed of those draws.
        example_offset: Examples before these batches in the whole data (the draws of a
            process's share under torchrun continue those of the processes before it).

    Raises:
        LandscapeInputError: an unknown kind, or an option the kind does not take.
    """
    if kind not in OPERATORS:
        raise LandscapeInputError(f"operator {kind!r}: choose one of {', '.join(OPERATORS)}")
    common = {
        "params": params, "dtype": dtype, "bn_mode": bn_mode, "keep_graphs": keep_graphs,
        "graph_budget": graph_budget,
    }  # fmt: skip
    if kind != "hessian" and hvp is not None:
        raise LandscapeInputError(f"hvp chooses Hessian-vector products; drop it for the {kind}")
    if kind == "ggn":
        return GGNOperator(model, loss_fn, batches, output_hessian=output_hessian, **common)
    if kind in ("fisher", "empirical_fisher"):
        mc = kind == "fisher"
        return FisherOperator(model, loss_fn, batches, kind="mc" if mc else "empirical",
                              mc_samples=mc_samples, seed=seed, example_offset=example_offset,
                              **common)  # fmt: skip
    if output_hessian != "auto":
        raise LandscapeInputError("output_hessian chooses the GGN's; drop it for the Hessian")
    if hvp is None:
        device = next(model.parameters()).device
        hvp = "double_backward" if device.type == "cpu" else "auto"
    return HessianOperator(model, loss_fn, batches, hvp=hvp, **common)
