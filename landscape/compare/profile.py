"""A model's flatness profile: accuracy, loss, top eigenvalues, trace and 1D basin width.

One function, `profile_model`, measures everything `flatscape compare` and `flatscape
reproduce` report for one model, with one set of `ProfileSettings`, so that every
model of a comparison is measured the same way on the same data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_weight,
    call_model,
    in_analysis_mode,
    model_outputs,
)
from landscape.curvature.measure import CurvatureRequest
from landscape.curvature.model import model_curvature
from landscape.curvature.temperature import temperature_matched_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.mean_loss import ParameterFilter, select_parameters
from landscape.sharpness import sharpness_report
from landscape.surface.directions import interpolation_direction, random_direction
from landscape.surface.evaluate import SurfaceEvaluator


@dataclass(frozen=True)
class ProfileSettings:
    """How every model of a comparison is measured.

    Attributes:
        top_k: Number of top Hessian eigenvalues (Lanczos, relative tolerance `tol`).
        tol: Relative tolerance of the eigenvalues.
        trace_matvecs: Hessian-vector products for the Hutch++ trace (0: no trace).
        line_points: Points of the 1D filter-normalized surface on [-line_radius,
            line_radius] (0: no surface).
        line_radius: Half-width of the 1D surface, in units of the direction.
        width_rise: Loss rise (nats) that defines the basin width.
        seed: Seed of the Lanczos start, the trace probes and the direction.
        confounds: Also the measures that control for confidence and scale (see
            `confound_measures`); temperature matching needs a common target across
            models and is done by `matched_lambda_1`.
        params: The parameters the curvature and sharpness are taken over
            (:class:`~landscape.operators.mean_loss.ParameterFilter`; default all).
        max_memory: The process's memory budget of the curvature measurements, as for
            :func:`~landscape.curvature.model.model_curvature` (``"auto"``, None or bytes).
    """

    top_k: int = 3
    tol: float = 1e-3
    trace_matvecs: int = 99
    line_points: int = 21
    line_radius: float = 1.0
    width_rise: float = 0.1
    seed: int = 0
    confounds: bool = False
    params: ParameterFilter | None = None
    max_memory: int | str | None = "auto"

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise LandscapeInputError(f"top_k {self.top_k}: must be >= 1")
        if self.trace_matvecs < 0 or self.line_points < 0:
            raise LandscapeInputError("trace_matvecs and line_points must be >= 0")
        if self.width_rise <= 0 or self.line_radius <= 0:
            raise LandscapeInputError("width_rise and line_radius must be > 0")


def basin_width(alphas: np.ndarray, losses: np.ndarray, rise: float) -> float:
    r"""Mean distance from the centre at which the loss first rises by `rise`, both sides.

    On each side of :math:`\alpha = 0` the crossing of :math:`L(0) + \text{rise}` is
    linearly interpolated between grid points; a side that never crosses counts as the
    grid's edge (the width is then a lower bound). NaN or inf losses count as crossing.
    """
    centre = int(np.argmin(np.abs(alphas)))
    threshold = losses[centre] + rise
    sides = []
    for step in (1, -1):
        reach = abs(alphas[-1] if step == 1 else alphas[0]) - abs(alphas[centre])
        i = centre
        while 0 <= i + step < len(alphas):
            j = i + step
            if not np.isfinite(losses[j]) or losses[j] >= threshold:
                if np.isfinite(losses[j]):
                    frac = (threshold - losses[i]) / (losses[j] - losses[i])
                else:
                    frac = 1.0
                reach = abs(alphas[i] - alphas[centre]) + frac * abs(alphas[j] - alphas[i])
                break
            i = j
        sides.append(float(reach))
    return float(np.mean(sides))


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch]
) -> tuple[float, float]:
    """Mean loss and accuracy, in eval mode.

    Each batch's loss is weighted by :func:`~landscape._types.batch_weight` (its examples,
    or the tokens a token loss counts). The accuracy is over class labels; for a token
    loss, over its counted tokens by its ``correct(outputs, targets)`` (NaN without one).
    """
    tokens = getattr(loss_fn, "count", None) is not None
    hits = getattr(loss_fn, "correct", None) if tokens else None
    total, counted, loss_sum, correct = 0, 0, 0.0, 0
    with analysis_mode(model):
        for x, y in batches:
            out = model_outputs(call_model(model, x))
            weight = batch_weight(loss_fn, (x, y))
            loss_sum += float(loss_fn(out, y)) * weight
            correct += hits(out, y) if hits else int((out.argmax(dim=-1) == y).sum())
            total, counted = total + len(y), counted + weight
    if not tokens:
        return loss_sum / counted, correct / total
    return loss_sum / counted, correct / counted if hits else float("nan")


def curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    s: ProfileSettings,
    per_layer: bool = False,
) -> dict[str, Any]:
    """Top-k eigenvalues (Lanczos) and the Hutch++ trace of the mean-loss Hessian.

    Measured as ``flatscape hessian`` measures (:func:`~landscape.curvature.model.
    model_curvature`: the examples cut once into batches with their graphs kept, within
    ``s.max_memory``), so a comparison's lambda_1 is the one ``hessian`` reports. With
    ``per_layer``, also the top eigenvalue and trace of each module's block on the same
    operator: the whole model is measured once (``hvps``), the blocks after it
    (``per_layer_hvps``).
    """
    request = CurvatureRequest(
        top_k=s.top_k, tol=s.tol, trace=s.trace_matvecs > 0, trace_method="hutchpp",
        trace_matvecs=max(s.trace_matvecs, 3), seed=s.seed,
    )  # fmt: skip
    blocks = CurvatureRequest(
        top_k=1, tol=s.tol, trace=s.trace_matvecs > 0, trace_matvecs=max(s.trace_matvecs, 3),
        seed=s.seed,
    )  # fmt: skip
    result = model_curvature(
        model,
        loss_fn,
        batches,
        request,
        params=s.params,
        max_memory=s.max_memory,
        per_layer=blocks if per_layer else False,
    )
    top, trace = result.eigen, result.trace
    whole = top.matvecs + (trace.matvecs if trace is not None else 0)
    record = {
        "parameters": result.dim,
        "eigenvalues": top.eigenvalues.tolist(),
        "residuals": top.residuals.tolist(),
        "lambda_1": float(top.eigenvalues[0]),
        "eigen_matvecs": top.matvecs,
        "trace": None if trace is None else float(trace.estimate),
        "trace_stderr": None if trace is None else float(trace.stderr),
        "hvps": whole,
    }
    if per_layer:
        record.update(per_layer=result.per_layer, per_layer_hvps=result.matvecs - whole)
    return record


def line_profile(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], s: ProfileSettings
) -> dict[str, Any]:
    """1D loss along the model's own filter-normalized Gaussian direction (seed `s.seed`).

    With ``s.params`` the direction is zero outside the selected parameters, so the
    width is of the same block as the curvature.
    """
    direction = random_direction(model, torch.Generator().manual_seed(s.seed))
    if s.params is not None:
        chosen = set(select_parameters(model, s.params))
        direction = {name: d if name in chosen else torch.zeros_like(d)
                     for name, d in direction.items()}  # fmt: skip
    alphas = np.linspace(-s.line_radius, s.line_radius, s.line_points)
    values = SurfaceEvaluator(model, loss_fn, [direction]).evaluate(batches, alphas[:, None])
    losses = np.asarray(values.loss, dtype=np.float64)
    return {
        "line_x": alphas.tolist(),
        "line_loss": losses.tolist(),
        "line_acc": np.asarray(values.acc, dtype=np.float64).tolist(),
        "surface_width": basin_width(alphas, losses, s.width_rise),
    }


def interpolation_line(
    model: nn.Module,
    other: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    alphas: np.ndarray,
) -> dict[str, list[float]]:
    """Loss and accuracy on the straight line from `model` (0) to `other` (1).

    Parameters and floating-point buffers (BatchNorm statistics) are interpolated.
    """
    direction = interpolation_direction(model, other.state_dict())
    values = SurfaceEvaluator(model, loss_fn, [direction]).evaluate(batches, alphas[:, None])
    return {
        "x": np.asarray(alphas, dtype=np.float64).tolist(),
        "loss": np.asarray(values.loss, dtype=np.float64).tolist(),
        "acc": np.asarray(values.acc, dtype=np.float64).tolist(),
    }


def confound_measures(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], s: ProfileSettings
) -> dict[str, Any]:
    """GGN top eigenvalue and element-wise adaptive sharpness (ASAM geometry).

    ``ggn_lambda_1``: top eigenvalue of the generalized Gauss-Newton matrix, the PSD part
    of the Hessian. ``avg_sharpness``: expected loss rise under Gaussian noise of
    relative size 0.05 per weight (32 antithetic draws, with ``avg_sharpness_stderr``);
    ``worst_sharpness``: loss rise after 20 steps of projected ascent in the element-wise
    ball of radius 0.1 (2 restarts). Both are invariant to rescalings that leave the
    function unchanged.
    """
    ggn = model_curvature(
        model,
        loss_fn,
        batches,
        operator="ggn",
        top_k=1,
        tol=s.tol,
        seed=s.seed,
        params=s.params,
        max_memory=s.max_memory,
    ).eigen
    common = {"geometries": ["elementwise"], "seed": s.seed, "params": s.params}
    average = sharpness_report(model, loss_fn, batches, 0.05, ["average"], samples=32, **common)
    worst = sharpness_report(model, loss_fn, batches, 0.1, ["worst"], steps=20, restarts=2,
                             **common)  # fmt: skip
    return {
        "ggn_lambda_1": float(ggn.eigenvalues[0]),
        "avg_sharpness": average["results"][0]["increase"],
        "avg_sharpness_stderr": average["results"][0]["stderr"],
        "worst_sharpness": worst["results"][0]["increase"],
    }


def matched_lambda_1(
    model: nn.Module, batches: Sequence[Batch], target: float, s: ProfileSettings
) -> dict[str, Any]:
    """Top Hessian eigenvalue of ``model(x) / T`` with T fitted so the train loss is `target`.

    Comparing models at one common loss removes the softmax-saturation confound: the
    cross-entropy Hessian scales with p(1 - p). Returns ``matched_temperature`` and
    ``matched_lambda_1``; both None when no temperature reaches the target.
    """
    try:
        matched = temperature_matched_curvature(
            model, batches, target, seed=s.seed, tol=s.tol, params=s.params
        )
    except LandscapeInputError:
        return {"matched_temperature": None, "matched_lambda_1": None, "matched_target": target}
    return {
        "matched_temperature": matched["temperature"],
        "matched_lambda_1": matched["matched"]["eigenvalues"][0],
        "matched_target": target,
    }


@in_analysis_mode
def profile_model(
    model: nn.Module,
    loss_fn: LossFunction,
    train_batches: Sequence[Batch],
    settings: ProfileSettings,
    test_batches: Sequence[Batch] | None = None,
    per_layer: bool = False,
) -> dict[str, Any]:
    """Everything a comparison reports for one model, measured on fixed batches.

    Returns a flat dict: ``train_loss``, ``train_accuracy`` (on `train_batches`, the
    data the curvature is measured on), ``test_loss``, ``test_accuracy`` (when
    `test_batches` are given), ``eigenvalues``, ``residuals``, ``lambda_1``, ``trace``,
    ``trace_stderr``, ``hvps``, ``line_x``, ``line_loss``, ``line_acc`` (percent),
    ``surface_width``, ``seconds``; with ``per_layer``, ``per_layer`` and
    ``per_layer_hvps`` (each module's block, on the operator of ``lambda_1``).
    """
    start = time.perf_counter()
    record: dict[str, Any] = {}
    record["train_loss"], record["train_accuracy"] = loss_and_accuracy(
        model, loss_fn, train_batches
    )
    if test_batches is not None:
        record["test_loss"], record["test_accuracy"] = loss_and_accuracy(
            model, loss_fn, test_batches
        )
    record.update(curvature(model, loss_fn, train_batches, settings, per_layer))
    if settings.line_points:
        record.update(line_profile(model, loss_fn, train_batches, settings))
    if settings.confounds:
        record.update(confound_measures(model, loss_fn, train_batches, settings))
    record["seconds"] = time.perf_counter() - start
    record["settings"] = asdict(settings)
    return record
