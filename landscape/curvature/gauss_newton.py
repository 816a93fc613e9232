r"""How much of the Hessian is its GGN: :math:`H = G + R`, reported side by side.

Top eigenvalues (Lanczos) and traces (Hutchinson) of the Hessian :math:`H`, the GGN
:math:`G` and the residual :math:`R = H - G` (:mod:`landscape.operators.ggn`), for one model on one
fixed data subset. The three traces use the *same* Rademacher probes
:math:`z_1, \dots, z_m`, so the residual's samples are
:math:`z_i^\top H z_i - z_i^\top G z_i` and the reported traces add up exactly,
:math:`\widehat{\operatorname{tr}}(H) = \widehat{\operatorname{tr}}(G) +
\widehat{\operatorname{tr}}(R)`, at the cost of the :math:`H` and :math:`G` products only.
:math:`R` is indefinite, so both its largest and its smallest eigenvalues are reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.curvature.eigen import EigenResult, lanczos
from landscape.curvature.trace import TraceResult, rademacher
from landscape.curvature.trace.hutchinson import quadratic_forms, sample_stderr
from landscape.operators.base import CurvatureOperator
from landscape.operators.batching import curvature_batches, gather_examples
from landscape.operators.ggn import GGNOperator, residual_operator
from landscape.operators.hessian import HessianOperator
from landscape.operators.mean_loss import ParameterSelection
from landscape.operators.memory import resolve_budget


@dataclass
class SplitPart:
    """One of :math:`H`, :math:`G`, :math:`R`: its top eigenpairs and its trace.

    Attributes:
        top: The largest eigenpairs (with residuals and convergence).
        trace: Hutchinson's estimate on the probes shared by all three, or None.
        smallest: The smallest eigenpairs (the residual only, which is indefinite).
    """

    top: EigenResult
    trace: TraceResult | None = None
    smallest: EigenResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON.

        Keys: ``eigenvalues``, ``residuals``, ``converged``, ``matvecs``, ``trace`` and, for
        the residual, ``smallest``.
        """
        record = _eigen_dict(self.top)
        record["trace"] = None if self.trace is None else dict(self.trace.__dict__)
        if self.smallest is not None:
            record["smallest"] = _eigen_dict(self.smallest)
        return record


@dataclass
class GGNSplit:
    """What :func:`ggn_split` measured: the Hessian, its GGN and their difference.

    Attributes:
        loss: Mean loss at the weights.
        examples: Examples it is the mean over.
        output_hessian: The GGN's output-space curvature (``"cross_entropy"``, ...).
        hessian, ggn, residual: The three parts.
        seconds: Wall time.
    """

    loss: float
    examples: int
    output_hessian: str
    hessian: SplitPart
    ggn: SplitPart
    residual: SplitPart
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: each part as :meth:`SplitPart.to_dict`."""
        return {
            "loss": self.loss,
            "examples": self.examples,
            "output_hessian": self.output_hessian,
            **{name: getattr(self, name).to_dict() for name in ("hessian", "ggn", "residual")},
            "seconds": self.seconds,
        }


def _eigen_dict(result: EigenResult) -> dict[str, Any]:
    return {
        "eigenvalues": result.eigenvalues.tolist(),
        "residuals": result.residuals.tolist(),
        "converged": result.converged,
        "matvecs": result.matvecs,
    }


def _trace(samples: torch.Tensor) -> TraceResult:
    return TraceResult(
        float(samples.double().mean()), sample_stderr(samples), samples.numel(), "hutchinson"
    )


def _top(operator: CurvatureOperator, k: int, which: str, tol: float, seed: int) -> EigenResult:
    return lanczos(operator, k=min(k, operator.dim), which=which, tol=tol, seed=seed)


@in_analysis_mode
def ggn_split(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    top_k: int = 1,
    trace_matvecs: int = 99,
    seed: int = 0,
    tol: float = 1e-3,
    params: ParameterSelection = None,
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    max_memory: int | str | None = "auto",
) -> GGNSplit:
    """Top eigenvalues and traces of the Hessian, its GGN and their difference.

    Args:
        model: Any module returning outputs (logits for cross-entropy).
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's *mean* loss.
        batches: The measured data (size-weighted mean over all examples).
        top_k: Eigenvalues per operator (and smallest ones for the residual).
        trace_matvecs: Hutchinson probes shared by the three traces (0: no traces).
        seed: Seed of the Lanczos start vectors and of the probes.
        tol: Lanczos relative tolerance.
        params: Parameter names (default: all trainable).
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"``.
        max_memory: The process's memory budget, as for
            :func:`~landscape.curvature.model.model_curvature`; the Hessian's kept graphs
            and the GGN's kept linearizations share it half and half.
    """
    start = time.perf_counter()
    inputs, targets = gather_examples(batches)
    batches, keep = curvature_batches(inputs, targets)  # hessian's batches, graphs kept
    budget = resolve_budget(max_memory, targets.device)
    options = {"params": params, "dtype": dtype, "bn_mode": bn_mode, "keep_graphs": keep,
               "graph_budget": None if budget is None else int(budget) // 2}  # fmt: skip
    H = HessianOperator(model, loss_fn, batches, **options)
    G = GGNOperator(model, loss_fn, batches, **options)
    R = residual_operator(H, G)
    parts = {
        "hessian": SplitPart(_top(H, top_k, "largest", tol, seed)),
        "ggn": SplitPart(_top(G, top_k, "largest", tol, seed)),
        "residual": SplitPart(
            _top(R, top_k, "largest", tol, seed), smallest=_top(R, top_k, "smallest", tol, seed)
        ),
    }
    if trace_matvecs > 0:
        generator = torch.Generator().manual_seed(seed)
        probes = rademacher(H.dim, trace_matvecs, generator, H.dtype, H.device)
        forms_h, forms_g = quadratic_forms(H, probes), quadratic_forms(G, probes)
        parts["hessian"].trace = _trace(forms_h)
        parts["ggn"].trace = _trace(forms_g)
        parts["residual"].trace = _trace(forms_h - forms_g)
    return GGNSplit(
        H.loss, H.num_examples, G.output_hessian_name, **parts,
        seconds=time.perf_counter() - start,
    )  # fmt: skip
