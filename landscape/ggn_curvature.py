"""Top eigenvalues, trace and spectral density of the GGN, with the Hessian's solvers.

:func:`measure_ggn_curvature` is :func:`landscape.curvature.measure_curvature` with a
:class:`~landscape.ggn.GGNOperator` in place of the Hessian: the same request, the same
solvers (run by the same code), the same :class:`~landscape.curvature.CurvatureResult`,
so reports and summaries need nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from landscape.curvature import CurvatureRequest, CurvatureResult
from landscape.curvature import _flatscape as run_solvers
from landscape.errors import LandscapeInputError
from landscape.ggn import GGNOperator, OutputHessian
from landscape.hessian import Batch, LossFunction
from landscape.operator import CurvatureOperator


def measure_ggn_curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    request: CurvatureRequest,
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    progress: Callable[[int], object] | None = None,
    output_hessian: str | OutputHessian = "auto",
    operator_factory: Callable[..., CurvatureOperator] = GGNOperator,
) -> CurvatureResult:
    """Measure the generalized Gauss-Newton matrix of the mean loss of ``model``.

    Args:
        model: Any module returning one output tensor (left unchanged).
        loss_fn: Mean-reduced loss ``loss_fn(outputs, targets)``.
        batches: Fixed ``(inputs, targets)`` batches; batch ``k`` weighs ``n_k / N``.
        request: What to measure; ``method`` must be ``"lanczos"`` or ``"power"``.
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"`` BatchNorm.
        progress: Called with the number of new GGN-vector products.
        output_hessian: See :class:`~landscape.ggn.GGNOperator`.
        operator_factory: Builds the operator from ``(model, loss_fn, batches,
            output_hessian=, dtype=, bn_mode=)``, e.g.
            :func:`landscape.data_parallel.data_parallel` for data split across processes.

    Returns:
        A :class:`CurvatureResult` whose ``hvp`` names the product, e.g.
        ``"ggn/cross_entropy"``.
    """
    start = time.perf_counter()
    batches = list(batches)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    request.check(dim)
    if request.method == "pyhessian":
        raise LandscapeInputError(
            "the pyhessian engine measures the Hessian only; use the lanczos or power "
            "engine for the GGN"
        )
    operator = operator_factory(
        model, loss_fn, batches, output_hessian=output_hessian, dtype=dtype, bn_mode=bn_mode
    )
    operator.progress = progress
    eigen, trace, density = run_solvers(operator, request)
    return CurvatureResult(
        eigen, trace, density, operator.loss, dim, operator.num_examples,
        f"ggn/{operator.output_hessian_name}", operator.dtype, operator.matvecs,
        time.perf_counter() - start,
    )  # fmt: skip
