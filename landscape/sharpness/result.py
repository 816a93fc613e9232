"""What every sharpness measure returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class SharpnessResult:
    """A loss increase within a radius ``rho``, with the loss it is measured from.

    Attributes:
        measure: ``"average"`` or ``"worst"``.
        geometry: ``"plain"``, ``"elementwise"`` or ``"filterwise"``.
        rho: Radius of the ball in the geometry's normalized coordinates.
        loss: Mean loss at the unperturbed weights on the measured data.
        increase: The sharpness: mean increase over the draws (average-case), or the
            largest increase found over all restarts (worst-case, a lower bound on the
            true maximum).
        stderr: Standard error of the mean over the draws (average-case; ``None`` for
            worst-case, which is not a Monte-Carlo estimate).
        values: Per draw (average) or per restart (worst) increases.
        evaluations: Passes over the measured data spent (a gradient counts one).
        seconds: Wall-clock time.
        settings: The options used (samples, seed, steps, ...).
    """

    measure: str
    geometry: str
    rho: float
    loss: float
    increase: float
    stderr: float | None
    values: list[float]
    evaluations: int
    seconds: float
    settings: dict[str, Any]

    @property
    def spread(self) -> float:
        """Sample standard deviation of ``values`` (0 for a single value)."""
        n = len(self.values)
        if n < 2:
            return 0.0
        mean = sum(self.values) / n
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (n - 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with ``spread`` included."""
        return {**asdict(self), "spread": self.spread}
