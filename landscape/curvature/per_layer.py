r"""Curvature by module: the top eigenvalues and trace of each module's diagonal block.

For the parameters :math:`I_m` a module owns directly (a convolution's weight and bias),
the block :math:`H_{I_m I_m}` is the Hessian of the loss in those parameters with all
others held fixed. Its eigenvalues say where the curvature sits (the first convolution
or the classifier); the block traces sum to the trace of :math:`H` exactly, since the
trace is the sum of the diagonal. Every block is a
:class:`~landscape.operators.base.BlockOperator` of one operator, so all of them share
the data and the kept gradient graphs; a block product costs one full product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape._types import in_analysis_mode
from landscape.atomic_files import save_figure
from landscape.curvature.layer_parts import layer_block, layer_parts
from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.operators.base import BlockOperator, CurvatureOperator


@dataclass
class LayerCurvature:
    """One module's block: which parameters, its top eigenvalues and its trace.

    ``method`` is ``"dense"`` (exact, small blocks) or the engine and trace method.
    In a transformer, ``block`` is the numbered block the module lies in (``""`` outside
    one) and ``part`` its role (:mod:`landscape.curvature.layer_parts`); both None
    otherwise.
    """

    module: str
    parameters: list[str]
    size: int
    eigenvalues: list[float]
    residuals: list[float]
    converged: bool
    trace: float | None
    trace_stderr: float | None
    method: str
    matvecs: int
    block: str | None = None
    part: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the ``per_layer`` rows of a report)."""
        return asdict(self)


def module_blocks(model: nn.Module, names: list[str]) -> list[tuple[str, list[str]]]:
    """The selected parameter names grouped by the module that owns them, in model order.

    A module's own parameters only (``recurse=False``): a Sequential holding convolutions
    owns none; the top-level module's direct parameters are grouped under ``""``.
    """
    selected = set(names)
    blocks = []
    for module_name, module in model.named_modules():
        own = [
            f"{module_name}.{name}" if module_name else name
            for name, _ in module.named_parameters(recurse=False)
        ]
        own = [name for name in own if name in selected]
        if own:
            blocks.append((module_name, own))
    return blocks


def _offsets(names: list[str], sizes: list[int]) -> dict[str, torch.Tensor]:
    offsets, start = {}, 0
    for name, size in zip(names, sizes, strict=True):
        offsets[name] = torch.arange(start, start + size)
        start += size
    return offsets


@in_analysis_mode
def per_layer_curvature(
    operator: CurvatureOperator,
    model: nn.Module,
    names: list[str],
    sizes: list[int],
    request: CurvatureRequest,
    progress: Callable[[int], object] | None = None,
) -> list[LayerCurvature]:
    """The request's eigenvalues and trace on each module's block of ``operator``.

    Args:
        operator: The curvature over the parameters ``names`` (flat, in that order).
        model: The module the names belong to (for grouping by owner).
        names: The operator's parameter names, in its order.
        sizes: Their numbers of entries.
        request: What to measure per block (its density, if any, is not). A block no
            larger than the products the iterative estimates would take is measured
            exactly instead (its dense matrix: eigenvalues and trace, ``method`` "dense").
        progress: Called with the number of new products.

    Returns:
        One row per module owning selected parameters, in model order.
    """
    offsets = _offsets(names, sizes)
    parts = layer_parts(model)
    rows = []
    for module_name, own in module_blocks(model, names):
        index = torch.cat([offsets[name] for name in own])
        block = BlockOperator(operator, index.to(operator.device))
        block.progress = progress
        if len(index) <= _iterative_cost(request):
            row = _dense_block(block, request)
        else:
            row = _iterative_block(block, request)
        role = {"block": layer_block(module_name), "part": parts[module_name]} if parts else {}
        rows.append(LayerCurvature(module_name or "(top level)", own, len(index), **row,
                                   matvecs=block.matvecs, **role))  # fmt: skip
    return rows


def _iterative_cost(request: CurvatureRequest) -> int:
    """Products the iterative estimates would roughly take (Lanczos about 10 + 3k)."""
    eigen = 10 + 3 * request.top_k if request.top_k else 0
    return eigen + (request.trace_matvecs if request.trace else 0)


def _dense_block(block: BlockOperator, request: CurvatureRequest) -> dict[str, Any]:
    """A block no larger than the iterative cost: its exact eigenvalues and trace."""
    matrix = block.to_dense().double()
    matrix = (matrix + matrix.T) / 2
    values = torch.linalg.eigvalsh(matrix)
    k = min(request.top_k, len(values))
    top = (values if request.which == "smallest" else values.flip(0))[:k]
    return {
        "eigenvalues": top.tolist(), "residuals": [0.0] * k, "converged": True,
        "trace": float(matrix.diagonal().sum()) if request.trace else None,
        "trace_stderr": 0.0 if request.trace else None, "method": "dense",
    }  # fmt: skip


def _iterative_block(block: BlockOperator, request: CurvatureRequest) -> dict[str, Any]:
    result = measure_curvature(block, replace(request, density=False))
    eigen, trace = result.eigen, result.trace
    return {
        "eigenvalues": [] if eigen is None else eigen.eigenvalues.tolist(),
        "residuals": [] if eigen is None else eigen.residuals.tolist(),
        "converged": True if eigen is None else bool(eigen.converged),
        "trace": None if trace is None else float(trace.estimate),
        "trace_stderr": None if trace is None else float(trace.stderr),
        "method": request.engine + ("/" + request.trace_method if trace is not None else ""),
    }


def plot_per_layer(
    tables: dict[str, list[dict[str, Any]]], out: str | Path, log: bool = True
) -> Path:
    """Bars of each module's lambda_1 and trace, one colour per model, side by side.

    Args:
        tables: Model label -> its per-layer rows (``CurvatureResult.per_layer``); the
            models must share their modules (a teacher and its students).
        out: Figure file (``.png``, ``.pdf``, ``.svg``).
        log: Logarithmic value axes (the blocks span orders of magnitude).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    modules = [r["module"] for r in next(iter(tables.values()))]

    def value(row: dict[str, Any], key: str) -> float:
        if key == "lambda_1":
            return row["eigenvalues"][0] if row["eigenvalues"] else np.nan
        return np.nan if row["trace"] is None else row["trace"]

    titles = {"lambda_1": "top eigenvalue of the block", "trace": "trace of the block"}
    keys = [
        key for key in titles
        if any(np.isfinite(value(r, key)) for rows in tables.values() for r in rows)
    ]  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.0, 1.1 * len(modules) + 2), 3.6),
                             squeeze=False)  # fmt: skip
    width = 0.8 / len(tables)
    x = np.arange(len(modules))
    for i, (label, rows) in enumerate(tables.items()):
        by_module = {r["module"]: r for r in rows}
        for ax, key in zip(axes[0], keys, strict=True):
            values = [value(by_module[m], key) for m in modules]
            ax.bar(x + (i - (len(tables) - 1) / 2) * width, values, width, label=label)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_xticks(x, modules, rotation=45, ha="right", fontsize=8)
        ax.set_title(titles[key], fontsize=10)
        positive = [value(r, key) for rows in tables.values() for r in rows]
        if log and all(v > 0 for v in positive if np.isfinite(v)):
            ax.set_yscale("log")
    if len(tables) > 1:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=150)
    plt.close(fig)
    return out
