r"""Temperature matching: compare models at equal confidence on the measured data.

The cross-entropy Hessian of a classifier carries a factor :math:`p_i(1 - p_i)` per
output, so a model that is more confident on its training data looks flatter whatever
the shape of its network (see :mod:`landscape.operators.ggn`). Dividing the logits by a temperature
:math:`T` changes only that confidence. :func:`fit_temperature` finds the :math:`T` at
which the mean loss on the measured batches equals a target (a common value for every
model, or the teacher's own loss), and :class:`TemperatureScaled` is the model with its
logits divided by :math:`T`, which any curvature operator then measures.

For fixed logits :math:`z` the mean cross-entropy :math:`\ell(\beta) = \text{mean}_n
[\operatorname{logsumexp}(\beta z_n) - \beta z_{n, y_n}]` is convex in the inverse
temperature :math:`\beta = 1/T`. It equals :math:`\log C` at :math:`\beta = 0` and, if
every example is classified correctly, falls monotonically towards 0 as
:math:`\beta \to \infty`; otherwise it reaches a minimum at some :math:`\beta^*` and then
grows without bound. The match is taken on the *calibration branch*
:math:`T \ge T^* = 1/\beta^*`, where the loss increases monotonically with :math:`T`
from its minimum to :math:`\log C`: raising the temperature always softens the model.
A target below the minimum or at/above :math:`\log C` cannot be reached on that branch
and raises :class:`~landscape.errors.LandscapeInputError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import brentq, minimize_scalar
from torch import Tensor, nn

from landscape._types import (
    Batch,
    analysis_mode,
    call_model,
    in_analysis_mode,
    model_outputs,
    move_to,
)
from landscape.curvature.measure import CurvatureRequest
from landscape.curvature.model import model_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.mean_loss import ParameterSelection

LOG_T_RANGE = (-12.0, 12.0)  # temperatures from e^-12 to e^12


class TemperatureScaled(nn.Module):
    """``model(x) / temperature``: the same network at another confidence.

    The wrapped model's parameters are this module's parameters (under the prefix
    ``model.``); the temperature is a buffer, so curvature is taken over the network's
    weights only. With ``temperature=1`` the outputs are the model's, bit for bit
    (division by one is exact in floating point).

    Example:
        >>> net = nn.Linear(2, 3)
        >>> x = torch.randn(4, 2)
        >>> torch.equal(TemperatureScaled(net, 2.0)(x), net(x) / 2.0)
        True
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):
            raise LandscapeInputError(f"temperature={temperature}: must be a positive number")
        self.model = model
        first = next(model.parameters(), None)
        dtype = first.dtype if first is not None else torch.get_default_dtype()
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=dtype))

    def forward(self, *args, **kwargs) -> Tensor:
        """The wrapped model's outputs divided by the temperature."""
        raw = call_model(self.model, kwargs) if kwargs and not args else self.model(*args)
        return model_outputs(raw) / self.temperature


@dataclass
class TemperatureFit:
    """The temperature that matches a target loss, and the losses around it.

    Attributes:
        temperature: :math:`T`; the matched model is ``TemperatureScaled(model, T)``.
        target: The requested mean loss.
        raw_loss: Mean loss of the model as it is (:math:`T = 1`).
        matched_loss: Mean loss at :math:`T`, recomputed from the logits.
        min_loss: The lowest loss any temperature reaches (at :math:`T^*`).
        min_temperature: :math:`T^*` (0 when every example is classified correctly).
        examples: Number of examples the loss is taken over.
    """

    temperature: float
    target: float
    raw_loss: float
    matched_loss: float
    min_loss: float
    min_temperature: float
    examples: int

    def to_dict(self) -> dict[str, float]:
        """The fit as a plain dict (for JSON)."""
        return dict(self.__dict__)


def collect_logits(model: nn.Module, batches: Iterable[Batch]) -> tuple[Tensor, Tensor]:
    """All logits (float64, eval mode, no gradients) and targets of the batches, in order."""
    logits, targets = [], []
    device = next(model.parameters()).device
    with torch.no_grad(), analysis_mode(model, "eval"):
        for inputs, y in batches:
            logits.append(model_outputs(call_model(model, move_to(inputs, device, None))).double())
            targets.append(y.to(device))
    if not logits:
        raise LandscapeInputError("batches: need at least one (inputs, targets) batch")
    return torch.cat(logits), torch.cat(targets)


def scaled_loss(logits: Tensor, targets: Tensor, temperature: float) -> float:
    """Mean cross-entropy of ``logits / temperature``."""
    return float(nn.functional.cross_entropy(logits / temperature, targets))


def mean_cross_entropy(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Mean cross-entropy of the model over all examples of the batches (eval mode)."""
    return scaled_loss(*collect_logits(model, batches), 1.0)


def _minimum(logits: Tensor, targets: Tensor) -> tuple[float, float]:
    r""":math:`(T^*, \\ell(T^*))`; :math:`T^* = 0` when the loss only falls as T shrinks."""
    lo, hi = LOG_T_RANGE
    loss = lambda s: scaled_loss(logits, targets, math.exp(s))  # noqa: E731
    if loss(lo) <= loss(lo + 1e-3):  # rising already at the smallest T: all correct
        return 0.0, loss(lo)
    # Convex in beta = e^{-s}, hence unimodal in s: a bounded scalar search finds it.
    found = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return math.exp(found.x), float(found.fun)


@in_analysis_mode
def fit_temperature(
    model: nn.Module, batches: Iterable[Batch], target: float, tol: float = 1e-10
) -> TemperatureFit:
    r"""The temperature on the calibration branch at which the mean cross-entropy is ``target``.

    Args:
        model: A classifier returning logits (class axis 1).
        batches: The measured data, the same as for the curvature.
        target: Mean cross-entropy to reach, in nats (e.g. the teacher's train loss).
        tol: Absolute tolerance on the root in :math:`\\log T`.

    Returns:
        The fitted temperature with the raw, matched and minimal losses.

    Raises:
        LandscapeInputError: if the target lies below the lowest loss any temperature
            reaches or at/above :math:`\\log C` (the loss of a uniform prediction).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net, x = nn.Linear(3, 4), torch.randn(50, 3)
        >>> y = net(x).argmax(1)
        >>> fit = fit_temperature(net, [(x, y)], target=0.5)
        >>> abs(fit.matched_loss - 0.5) < 1e-8
        True
    """
    logits, targets = collect_logits(model, batches)
    classes = logits.shape[1]
    raw = scaled_loss(logits, targets, 1.0)
    t_min, loss_min = _minimum(logits, targets)
    ceiling = math.log(classes)
    if not loss_min < target < ceiling:
        raise LandscapeInputError(
            f"target loss {target:.6g} cannot be reached by rescaling this model's logits: "
            f"any temperature T >= {t_min:.4g} gives a loss in [{loss_min:.6g}, "
            f"{ceiling:.6g}) (log of {classes} classes) on these {len(targets)} examples; "
            "choose a target inside that range"
        )
    lo = math.log(t_min) if t_min > 0 else LOG_T_RANGE[0]
    hi = lo + 1.0
    gap = lambda s: scaled_loss(logits, targets, math.exp(s)) - target  # noqa: E731
    while gap(hi) < 0:
        if hi >= LOG_T_RANGE[1]:
            raise LandscapeInputError(
                f"target loss {target:.6g} needs a temperature above e^{LOG_T_RANGE[1]:.0f}; "
                "choose a lower target"
            )
        hi = min(hi + 2.0, LOG_T_RANGE[1])
    s = brentq(gap, lo, hi, xtol=tol, rtol=1e-15)
    temperature = math.exp(s)
    return TemperatureFit(
        temperature=temperature,
        target=target,
        raw_loss=raw,
        matched_loss=scaled_loss(logits, targets, temperature),
        min_loss=loss_min,
        min_temperature=t_min,
        examples=len(targets),
    )


def _curvature(
    model: nn.Module,
    batches: list[Batch],
    top_k: int,
    trace_matvecs: int,
    seed: int,
    tol: float,
    params: ParameterSelection,
    bn_mode: str,
    start: torch.Tensor | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Eigenvalues (and trace) of the cross-entropy's Hessian, and the Ritz vectors."""
    request = CurvatureRequest(top_k=top_k, tol=tol, trace=trace_matvecs > 0,
                               trace_method="hutchinson", trace_matvecs=max(trace_matvecs, 1),
                               seed=seed)  # fmt: skip
    result = model_curvature(model, nn.functional.cross_entropy, batches, request,
                             params=params, bn_mode=bn_mode, start=start)  # fmt: skip
    eigen, trace = result.eigen, result.trace
    return {
        "loss": result.loss,
        "eigenvalues": eigen.eigenvalues.tolist(),
        "residuals": eigen.residuals.tolist(),
        "converged": eigen.converged,
        "eigen_matvecs": eigen.matvecs,
        "trace": None if trace is None else dict(trace.__dict__),
    }, eigen.eigenvectors


@in_analysis_mode
def temperature_matched_curvature(
    model: nn.Module,
    batches: Iterable[Batch],
    target: float,
    top_k: int = 1,
    trace_matvecs: int = 0,
    seed: int = 0,
    tol: float = 1e-3,
    params: ParameterSelection = None,
    bn_mode: str = "eval",
) -> dict[str, Any]:
    """Top Hessian eigenvalues (and trace) of the cross-entropy, raw and at a matched loss.

    Args:
        model: A classifier returning logits.
        batches: The measured data.
        target: The mean cross-entropy both models are brought to (see
            :func:`fit_temperature`); e.g. the teacher's raw loss on the same data.
        top_k: Eigenvalues (Lanczos).
        trace_matvecs: Hutchinson probes (0: no trace).
        seed: Seed of Lanczos and Hutchinson (the same for raw and matched).
        tol: Lanczos relative tolerance.
        params: Parameter names of ``model`` (default: all trainable).
        bn_mode: ``"eval"`` or ``"train"``.

    The matched measurement starts Lanczos from the raw one's Ritz vectors (a warm start:
    the same tolerance, fewer products).

    Returns:
        ``{"temperature", "fit": TemperatureFit.to_dict(), "raw": {...}, "matched": {...}}``,
        where ``raw``/``matched`` hold ``loss``, ``eigenvalues``, ``residuals``,
        ``converged``, ``eigen_matvecs`` and ``trace`` (or ``None``).
    """
    batches = list(batches)
    fit = fit_temperature(model, batches, target)
    matched = TemperatureScaled(model, fit.temperature)
    matched_params = None if params is None else [f"model.{name}" for name in params]
    options = {"top_k": top_k, "trace_matvecs": trace_matvecs, "seed": seed, "tol": tol,
               "bn_mode": bn_mode}  # fmt: skip
    raw, vectors = _curvature(model, batches, params=params, **options)
    # The same parameters in the same order: the raw Ritz vectors start the matched run.
    scaled, _ = _curvature(matched, batches, params=matched_params, start=vectors, **options)
    return {"temperature": fit.temperature, "fit": fit.to_dict(), "raw": raw, "matched": scaled}
