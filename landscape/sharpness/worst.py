r"""Worst-case sharpness: the largest loss increase found in the ball of radius :math:`\rho`.

.. math::
    S_{\max}(\rho) = \max_{\lVert u \rVert_2 \le \rho} L(w + c \odot u) - L(w),

approximated by projected, normalized gradient ascent in the normalized coordinates
:math:`u` (as in SAM/ASAM's inner step, iterated):

.. math::
    u_{t+1} = \Pi_\rho\!\left(u_t + \alpha \rho \, \frac{g_t}{\lVert g_t \rVert}\right),
    \qquad g_t = \nabla_u L(w + c \odot u_t),

where :math:`\Pi_\rho` rescales onto the ball. Each restart starts from a seeded random
point of norm :math:`\rho/2`; the largest increase seen at any iterate of any restart is
reported, a lower bound on the true maximum. On a quadratic
:math:`\tfrac12 \delta^\top H \delta` the iteration is a damped power iteration and
reaches :math:`\tfrac{\rho^2}{2} \lambda_{\max}(C H C)`.
"""

from __future__ import annotations

import time

import torch

from landscape.errors import LandscapeInputError
from landscape.sharpness.geometry import perturbation_scales
from landscape.sharpness.objective import PerturbedLoss, norm, unit_direction
from landscape.sharpness.result import SharpnessResult


def _ascent(
    objective: PerturbedLoss,
    scales: dict[str, torch.Tensor],
    u: dict[str, torch.Tensor],
    rho: float,
    steps: int,
    step_size: float,
) -> float:
    """Run one restart; return the largest increase seen at any iterate."""
    best = -float("inf")
    for _ in range(steps):
        value, g = objective.gradient(scales, u)
        best = max(best, value - objective.loss)
        g_norm = norm(g)
        if g_norm == 0.0:
            return best
        u = {n: u[n] + (step_size * rho / g_norm) * g[n] for n in u}
        u_norm = norm(u)
        if u_norm > rho:
            u = {n: t * (rho / u_norm) for n, t in u.items()}
    return max(best, objective.increase(scales, u))


def worst_sharpness(
    objective: PerturbedLoss,
    rho: float,
    geometry: str = "elementwise",
    steps: int = 20,
    restarts: int = 2,
    step_size: float = 2.0,
    seed: int = 0,
    eta: float = 0.0,
) -> SharpnessResult:
    r"""Projected gradient ascent for the worst-case loss increase in the ``rho``-ball.

    Args:
        objective: The model's loss over the measured data (:class:`PerturbedLoss`).
        rho: Radius in normalized coordinates (> 0).
        geometry: ``"plain"``, ``"elementwise"`` or ``"filterwise"``.
        steps: Gradient steps per restart (each one pass over the data, forward and
            backward; one more pass evaluates the last iterate).
        restarts: Independent random starts; their spread is reported.
        step_size: :math:`\\alpha`, the step length as a fraction of ``rho``.
        seed: Seed of the random starts.
        eta: Added to the adaptive scales.

    Returns:
        The largest increase over restarts, and each restart's best increase.
    """
    if not rho > 0:
        raise LandscapeInputError(f"rho={rho}: the radius must be > 0")
    if steps < 1 or restarts < 1:
        raise LandscapeInputError(f"steps={steps}, restarts={restarts}: both must be >= 1")
    if not step_size > 0:
        raise LandscapeInputError(f"step_size={step_size}: must be > 0")
    start, evaluations = time.perf_counter(), objective.evaluations
    scales = perturbation_scales(objective.weights, geometry, eta)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(restarts):
        u = {n: 0.5 * rho * t for n, t in unit_direction(objective.weights, generator).items()}
        values.append(_ascent(objective, scales, u, rho, steps, step_size))
    return SharpnessResult(
        measure="worst",
        geometry=geometry,
        rho=rho,
        loss=objective.loss,
        increase=max(values),
        stderr=None,
        values=values,
        evaluations=objective.evaluations - evaluations,
        seconds=time.perf_counter() - start,
        settings={
            "steps": steps,
            "restarts": restarts,
            "step_size": step_size,
            "seed": seed,
            "eta": eta,
        },
    )
