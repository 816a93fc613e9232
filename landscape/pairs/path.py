r"""Loss and accuracy along a path between two networks, and the barrier on it.

The straight path from :math:`\theta_A` (``model``) to :math:`\theta_B` (``other``) is
:math:`\theta(t) = (1 - t)\,\theta_A + t\,\theta_B`, :math:`t \in [0, 1]`. Its loss
*barrier* (Frankle et al. 2020, *Linear Mode Connectivity and the Lottery Ticket
Hypothesis*; in the form of Entezari et al. 2022 and Ainsworth et al. 2022) is the largest
rise of the loss above the straight line between the end losses,

.. math::
    B_L = \max_t \big[L(\theta(t)) - \big((1 - t)\,L(\theta_A) + t\,L(\theta_B)\big)\big],

over a grid of :math:`t` that includes both ends (so :math:`B_L \ge 0`, and 0 for a model
with itself or on a convex loss). The accuracy barrier is the largest drop of the
accuracy below the line between the end accuracies, in percentage points.

Points are evaluated by :class:`landscape.surface.evaluate.SurfaceEvaluator`, the surfaces'
own evaluator (a path is a 1D or 2D surface through chosen points). BatchNorm: by default
every point gets running statistics recomputed on the training batches
(:mod:`landscape.pairs.batchnorm` says why); ``batchnorm="interpolate"`` interpolates the
end points' statistics as ``flatscape surface --direction interp:`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from landscape._types import Batch, LossFunction, analysis_mode, in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.pairs.batchnorm import batchnorm_layers, recomputed_statistics
from landscape.surface.directions import Direction, interpolation_direction
from landscape.surface.evaluate import PointValues, SurfaceEvaluator

BATCHNORM = ("recompute", "interpolate")
PATH_POINTS = 41
"""Points of :math:`t` on [0, 1], both ends included, for the line and the curve alike."""


@dataclass(frozen=True)
class PathValues:
    """Mean loss and accuracy (percent) at each ``t`` of a path, per split, float64."""

    t: np.ndarray
    loss: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]

    def loss_barrier(self, split: str = "train") -> float:
        """The largest rise of the loss above the line between its end values."""
        return line_excess(self.t, self.loss[split])

    def accuracy_barrier(self, split: str = "train") -> float:
        """The largest drop of the accuracy below the line between its end values (points)."""
        return line_excess(self.t, -self.acc[split])

    def max_loss(self, split: str = "train") -> float:
        """The largest loss on the path."""
        return float(np.max(self.loss[split]))


def line_excess(t: np.ndarray, values: np.ndarray) -> float:
    r"""The largest excess of ``values`` over the chord of its ends, on ``t`` from 0 to 1.

    :math:`\max_k [v_k - ((1 - t_k)\,v_0 + t_k\,v_{K})]`, with ``t[0] = 0`` and ``t[-1] = 1``.

    Example:
        >>> line_excess(np.array([0.0, 0.5, 1.0]), np.array([1.0, 4.0, 3.0]))
        2.0
    """
    t = np.asarray(t, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if t.size < 2 or t[0] != 0.0 or t[-1] != 1.0:
        raise LandscapeInputError("a path's t grid must start at 0 and end at 1")
    chord = values[0] + t * (values[-1] - values[0])  # exact when the ends are equal
    excess = values - chord
    excess[[0, -1]] = 0.0  # by definition; rounding must not make it a barrier
    return float(np.max(excess))


def path_grid(points: int) -> np.ndarray:
    """``points`` values of t on [0, 1], both ends included (at least 2)."""
    if points < 2:
        raise LandscapeInputError(f"points {points}: a path needs at least its two ends")
    return np.linspace(0.0, 1.0, points)


def check_batchnorm(batchnorm: str, data: Mapping[str, Sequence[Batch]]) -> str:
    """``batchnorm`` when valid; ``"recompute"`` needs a ``"train"`` split in ``data``."""
    if batchnorm not in BATCHNORM:
        raise LandscapeInputError(f"batchnorm {batchnorm!r}: choose one of {', '.join(BATCHNORM)}")
    if batchnorm == "recompute" and "train" not in data:
        raise LandscapeInputError(
            "batchnorm='recompute' takes the running statistics from data['train']; "
            "give a train split or batchnorm='interpolate'"
        )
    return batchnorm


@in_analysis_mode
def path_values(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Mapping[str, Sequence[Batch]],
    directions: Sequence[Direction],
    coords: np.ndarray,
    batchnorm: str = "recompute",
) -> dict[str, PointValues]:
    r"""Loss and accuracy at :math:`\theta + \sum_i c_{ki} d_i` for each row ``k`` of ``coords``.

    Without BatchNorm (or with ``batchnorm="interpolate"``) all points are one block of
    the surface evaluator (the data is read once); with recomputed statistics each point
    is its own block after its statistics pass over ``data["train"]``.
    """
    check_batchnorm(batchnorm, data)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(directions))
    evaluator = SurfaceEvaluator(model, loss_fn, directions)
    if batchnorm == "interpolate" or not batchnorm_layers(model):
        return {split: evaluator.evaluate(batches, coords) for split, batches in data.items()}
    own = {n: b.detach() for n, b in model.named_buffers()}
    found: dict[str, list[PointValues]] = {split: [] for split in data}
    for row in coords:
        point = torch.from_numpy(row[None, :]).to(evaluator.device)
        weights = {n: w[0] for n, w in evaluator.stacked_weights(point).items()}
        statistics = recomputed_statistics(model, weights, data["train"])
        step = {n: w - evaluator.base[n] for n, w in weights.items()}
        step.update({n: s - own[n] for n, s in statistics.items()})
        at_point = SurfaceEvaluator(model, loss_fn, [step])
        for split, batches in data.items():
            found[split].append(at_point.evaluate(batches, np.ones((1, 1))))
    return {
        split: PointValues(
            np.concatenate([v.loss for v in values]), np.concatenate([v.acc for v in values])
        )  # fmt: skip
        for split, values in found.items()
    }


@in_analysis_mode
def linear_path(
    model: nn.Module,
    other: nn.Module,
    loss_fn: LossFunction,
    data: Mapping[str, Sequence[Batch]],
    points: int = PATH_POINTS,
    batchnorm: str = "recompute",
) -> PathValues:
    r"""Loss and accuracy on the straight path from ``model`` (t = 0) to ``other`` (t = 1).

    Args:
        model: One network (the teacher); left as it was.
        other: A network of the same architecture (the student); left as it was.
        loss_fn: Batch-mean loss, e.g. ``torch.nn.functional.cross_entropy``.
        data: Batches per split, e.g. ``{"train": [...], "test": [...]}``.
        points: Values of :math:`t` on [0, 1], both ends included.
        batchnorm: ``"recompute"`` (running statistics of each point from
            ``data["train"]``) or ``"interpolate"``.

    Returns:
        The values per split; ``.loss_barrier(split)`` and ``.accuracy_barrier(split)``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> data = {"train": [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]}
        >>> linear_path(a, a, nn.functional.cross_entropy, data, points=5).loss_barrier()
        0.0
    """
    t = path_grid(points)
    with analysis_mode(other):
        direction = interpolation_direction(model, other.state_dict())
    values = path_values(model, loss_fn, data, [direction], t[:, None], batchnorm)
    return path_from_values(t, values)


def path_from_values(t: np.ndarray, values: Mapping[str, PointValues]) -> PathValues:
    """:class:`PathValues` from the evaluator's values per split."""
    return PathValues(
        t=np.asarray(t, dtype=np.float64),
        loss={split: np.asarray(v.loss, dtype=np.float64) for split, v in values.items()},
        acc={split: np.asarray(v.acc, dtype=np.float64) for split, v in values.items()},
    )
