r"""How much of the Hessian is Gauss-Newton: :math:`H = G + R`, reported side by side.

Top eigenvalues (Lanczos) and traces (Hutchinson) of the Hessian :math:`H`, the GGN
:math:`G` and the residual :math:`R = H - G` (:mod:`landscape.ggn`), for one model on one
fixed data subset. The three traces use the *same* Rademacher probes
:math:`z_1, \dots, z_m`, so the residual's samples are
:math:`z_i^\top H z_i - z_i^\top G z_i` and the reported traces add up exactly,
:math:`\widehat{\operatorname{tr}}(H) = \widehat{\operatorname{tr}}(G) +
\widehat{\operatorname{tr}}(R)`, at the cost of the :math:`H` and :math:`G` products only.
:math:`R` is indefinite, so both its largest and its smallest eigenvalues are reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from landscape.eigen import EigenResult, lanczos
from landscape.ggn import GGNOperator, residual_operator
from landscape.hessian import Batch, HessianOperator, LossFunction
from landscape.operator import CurvatureOperator
from landscape.trace import rademacher
from landscape.trace.hutchinson import quadratic_forms, sample_stderr


def _eigen_dict(result: EigenResult) -> dict[str, Any]:
    return {
        "eigenvalues": result.eigenvalues.tolist(),
        "residuals": result.residuals.tolist(),
        "converged": result.converged,
        "matvecs": result.matvecs,
    }


def _trace_dict(samples: torch.Tensor) -> dict[str, Any]:
    return {
        "estimate": float(samples.double().mean()),
        "stderr": sample_stderr(samples),
        "method": "hutchinson",
        "matvecs": samples.numel(),
    }


def _top(operator: CurvatureOperator, k: int, which: str, tol: float, seed: int) -> EigenResult:
    return lanczos(operator, k=min(k, operator.dim), which=which, tol=tol, seed=seed)


def gauss_newton_split(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    top_k: int = 1,
    trace_probes: int = 100,
    seed: int = 0,
    tol: float = 1e-3,
    params: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
) -> dict[str, Any]:
    """Top eigenvalues and traces of the Hessian, its GGN and their difference.

    Args:
        model: Any module returning outputs (logits for cross-entropy).
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's *mean* loss.
        batches: The measured data (size-weighted mean over all examples).
        top_k: Eigenvalues per operator (and smallest ones for the residual).
        trace_probes: Hutchinson probes shared by the three traces (0: no traces).
        seed: Seed of the Lanczos start vectors and of the probes.
        tol: Lanczos relative tolerance.
        params: Parameter names (default: all trainable).
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"``.

    Returns:
        ``{"loss", "examples", "output_hessian", "hessian": {...}, "ggn": {...},
        "residual": {..., "smallest": {...}}, "seconds"}``; each operator's entry holds
        ``eigenvalues`` (largest first), their ``residuals`` ``||Av - lambda v||``,
        ``converged``, ``matvecs`` and ``trace`` (``estimate``, ``stderr``, ``method``,
        ``matvecs``) or ``None``.
    """
    start = time.perf_counter()
    batches = list(batches)
    H = HessianOperator(model, loss_fn, batches, params=params, dtype=dtype, bn_mode=bn_mode)
    G = GGNOperator(model, loss_fn, batches, params=params, dtype=dtype, bn_mode=bn_mode)
    R = residual_operator(H, G)
    report: dict[str, Any] = {
        "loss": H.loss,
        "examples": H.num_examples,
        "output_hessian": G.output_hessian_name,
        "hessian": _eigen_dict(_top(H, top_k, "largest", tol, seed)),
        "ggn": _eigen_dict(_top(G, top_k, "largest", tol, seed)),
        "residual": _eigen_dict(_top(R, top_k, "largest", tol, seed)),
    }
    report["residual"]["smallest"] = _eigen_dict(_top(R, top_k, "smallest", tol, seed))
    traces = {"hessian": None, "ggn": None, "residual": None}
    if trace_probes > 0:
        generator = torch.Generator().manual_seed(seed)
        probes = rademacher(H.dim, trace_probes, generator, H.dtype, H.device)
        forms_h, forms_g = quadratic_forms(H, probes), quadratic_forms(G, probes)
        traces = {
            "hessian": _trace_dict(forms_h),
            "ggn": _trace_dict(forms_g),
            "residual": _trace_dict(forms_h - forms_g),
        }
    for name, trace in traces.items():
        report[name]["trace"] = trace
    report["seconds"] = time.perf_counter() - start
    return report
