r"""Average-case sharpness: the expected loss increase under Gaussian weight noise.

.. math::
    S_{\text{avg}}(\rho) = \mathbb{E}_{z \sim \mathcal{N}(0, I)}
        \big[L(w + \rho\, c \odot z)\big] - L(w),

with :math:`c` the geometry's scale (:mod:`landscape.sharpness.geometry`): ``rho`` is the
standard deviation of the noise *per coordinate* in normalized coordinates, as in
Andriushchenko et al. (2023): in the element-wise geometry every weight moves by about
``rho`` times its own magnitude, in the filter-wise geometry every filter moves along a
filter-normalized direction scaled by ``rho`` (so this is the mean of the 1D
filter-normalized surfaces at :math:`\alpha = \rho`). Near a minimum, with
:math:`C = \operatorname{diag}(c)`,

.. math::
    S_{\text{avg}}(\rho) \approx \frac{\rho^2}{2} \operatorname{tr}(C H C),

so the plain measure tracks the Hessian trace. Each draw is evaluated antithetically,
:math:`\tfrac12 [L(w + \rho c \odot z) + L(w - \rho c \odot z)] - L(w)`: the expectation is
unchanged (:math:`z` and :math:`-z` are equally likely) and the first-order term
:math:`\rho \nabla L^\top (c \odot z)`, which would otherwise dominate the variance,
cancels.
"""

from __future__ import annotations

import math
import time

import torch

from landscape.errors import LandscapeInputError
from landscape.sharpness.geometry import perturbation_scales
from landscape.sharpness.objective import PerturbedLoss, gaussian_direction
from landscape.sharpness.result import SharpnessResult


def average_sharpness(
    objective: PerturbedLoss,
    rho: float,
    geometry: str = "elementwise",
    samples: int = 32,
    seed: int = 0,
    eta: float = 0.0,
) -> SharpnessResult:
    """Monte-Carlo average-case sharpness with antithetic pairs.

    Args:
        objective: The model's loss over the measured data (:class:`PerturbedLoss`).
        rho: Noise standard deviation per normalized coordinate (> 0).
        geometry: ``"plain"``, ``"elementwise"`` or ``"filterwise"``.
        samples: Independent draws of :math:`z` (each costs two passes over the data).
        seed: Seed of the draws; the same seed gives the same :math:`z` in every
            geometry and for every model of the same shape (common random numbers).
        eta: Added to the adaptive scales (keeps zero weights perturbable; breaks exact
            invariance when > 0).

    Returns:
        Mean increase, its standard error over the draws, and the per-draw values.
    """
    if not rho > 0:
        raise LandscapeInputError(f"rho={rho}: the noise scale must be > 0")
    if samples < 2:
        raise LandscapeInputError(f"samples={samples}: need at least 2 draws for an error bar")
    start, evaluations = time.perf_counter(), objective.evaluations
    scales = perturbation_scales(objective.weights, geometry, eta)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(samples):
        u = {n: rho * z for n, z in gaussian_direction(objective.weights, generator).items()}
        plus = objective.increase(scales, u)
        minus = objective.increase(scales, {n: -t for n, t in u.items()})
        values.append(0.5 * (plus + minus))
    mean = sum(values) / samples
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (samples - 1))
    return SharpnessResult(
        measure="average",
        geometry=geometry,
        rho=rho,
        loss=objective.loss,
        increase=mean,
        stderr=std / math.sqrt(samples),
        values=values,
        evaluations=objective.evaluations - evaluations,
        seconds=time.perf_counter() - start,
        settings={"samples": samples, "seed": seed, "eta": eta, "antithetic": True},
    )
