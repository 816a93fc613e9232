r"""Planes through several models: three checkpoints, or the principal directions of paths.

**Three checkpoints** (:func:`checkpoint_plane`, Garipov et al. 2018's picture of mode
connectivity): with :math:`u = \theta_B - \theta_A` and :math:`v = \theta_C - \theta_A`
over every parameter and floating-point buffer, Gram-Schmidt gives the orthonormal axes

.. math::
    e_x = u / \lVert u \rVert, \qquad
    e_y = w / \lVert w \rVert, \quad w = v - (v \cdot e_x)\, e_x,

so that A, B and C sit at :math:`(0, 0)`, :math:`(\lVert u \rVert, 0)` and
:math:`(v \cdot e_x, \lVert w \rVert)`, in units of weight-space distance, and the points
are the models themselves (BatchNorm statistics included, eval mode). With
``normalization="filter"`` each axis is filter-normalized afterwards (Li et al. 2018) over
the parameters only; the models then lie near the plane, not on it: their coordinates are
the least-squares projection of :math:`\theta - \theta_A` onto the two axes, and
``off_plane`` says how far each model is from the plane.

**Trajectories** (:func:`trajectory_plane`, loss-landscape's ``setup_PCA_directions``):
the rows of :math:`M` are :math:`\theta_t - \theta` for every snapshot :math:`t` of one or
more training runs, over the parameters, :math:`\theta` the model at the origin. The axes
are the top two right singular vectors of :math:`M` with its column means subtracted
(principal component analysis, as scikit-learn's ``PCA`` that loss-landscape calls), the
explained variance :math:`s_k^2 / (n - 1)` and its share of the total, and each snapshot
is projected onto the axes: its path on the plane.

Signs are fixed so that the largest-magnitude entry of each axis is positive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from landscape._types import in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.surface.directions import Direction, model_parameters, normalize_direction

DEGENERATE = 1e-6
"""A side of the plane shorter than this fraction of the other is a degenerate plane."""


@dataclass
class Plane:
    """Two axes and where models sit on them.

    Attributes:
        directions: The x and y axes (parameter or buffer name to tensor).
        coordinates: ``(k, 2)``: each model's ``(x, y)`` on the plane.
        labels: One per row of ``coordinates``.
        off_plane: ``(k,)``: each model's distance from the plane (0 when it lies on it).
        attrs: Scalars to record (norms, explained variance, ...).
        paths: Projected trajectories by label: ``{"coordinates": (n, 2),
            "off_plane": (n,), "epochs": (n,)}``.
    """

    directions: list[Direction]
    coordinates: np.ndarray
    labels: list[str]
    off_plane: np.ndarray
    attrs: dict[str, float | str] = field(default_factory=dict)
    paths: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def extra(self) -> dict[str, np.ndarray]:
        """The arrays a surface file keeps of this plane (``marks/``, ``paths/``)."""
        arrays = {
            "marks/labels": np.asarray(self.labels, dtype=str),
            "marks/coordinates": np.asarray(self.coordinates, dtype=np.float64),
            "marks/off_plane": np.asarray(self.off_plane, dtype=np.float64),
        }
        for n, (label, path) in enumerate(self.paths.items()):
            arrays[f"paths/{n}/label"] = np.asarray([label], dtype=str)
            for key, value in path.items():
                arrays[f"paths/{n}/{key}"] = np.asarray(value, dtype=np.float64)
        return arrays


def _tensors(model: nn.Module, buffers: bool) -> dict[str, Tensor]:
    own = model_parameters(model)
    if buffers:
        own.update({name: b.detach() for name, b in model.named_buffers() if b.is_floating_point()})
    return own


def _flat_difference(own: Mapping[str, Tensor], state: Mapping[str, Tensor], what: str) -> Tensor:
    """``state - own`` over ``own``'s names as one float64 vector; same names and shapes."""
    pieces = []
    for name, theta in own.items():
        other = state.get(name)
        if other is None or tuple(other.shape) != tuple(theta.shape):
            found = "no such tensor" if other is None else f"shape {tuple(other.shape)}"
            raise LandscapeInputError(
                f"{what}: {name!r} has {found}, the first model {tuple(theta.shape)}; "
                "give models of one architecture"
            )
        pieces.append((other.detach().cpu().double() - theta.cpu().double()).reshape(-1))
    return torch.cat(pieces)


def _unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> Direction:
    out, start = {}, 0
    for name, theta in like.items():
        n = theta.numel()
        out[name] = vector[start : start + n].reshape(theta.shape).to(theta.dtype).to(theta.device)
        start += n
    return out


def _flatten(direction: Mapping[str, Tensor], like: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([direction[name].detach().cpu().double().reshape(-1) for name in like])


def _fix_sign(vector: Tensor) -> Tensor:
    return vector * torch.sign(vector[vector.abs().argmax()])


@in_analysis_mode
def checkpoint_plane(
    model: nn.Module,
    state_b: Mapping[str, Tensor],
    state_c: Mapping[str, Tensor],
    labels: Sequence[str] = ("A", "B", "C"),
    normalization: str = "none",
) -> Plane:
    """The plane through ``model`` (the origin) and two more models of its architecture.

    Args:
        model: Model A, at the origin.
        state_b: Model B's ``state_dict()``: the x axis points at it.
        state_c: Model C's ``state_dict()``.
        labels: Names of A, B and C (recorded and marked on plots).
        normalization: ``"none"`` (raw weight space: the models lie on the plane) or
            ``"filter"`` (each axis filter-normalized; the models are projected).

    Raises:
        LandscapeInputError: Another architecture, B equal to A, or C on the line AB.
    """
    if normalization not in ("none", "filter"):
        raise LandscapeInputError(f"normalization {normalization!r}: choose none or filter")
    raw = normalization == "none"
    own = _tensors(model, buffers=raw)
    names = list(labels)
    u = _flat_difference(own, state_b, names[1])
    v = _flat_difference(own, state_c, names[2])
    scale = max(float(u.norm()), float(v.norm()))
    if float(u.norm()) <= DEGENERATE * max(scale, 1e-30):
        raise LandscapeInputError(
            f"plane: {names[1]} has the weights of {names[0]}; give three different models"
        )
    ex = u / u.norm()
    w = v - (v @ ex) * ex
    if float(w.norm()) <= DEGENERATE * scale:
        raise LandscapeInputError(
            f"plane: {names[2]} lies on the line through {names[0]} and {names[1]} "
            "(a degenerate plane); give three models not on one line"
        )
    ey = w / w.norm()  # C at positive y
    attrs: dict[str, float | str] = {
        "plane_norm_b": float(u.norm()),
        "plane_norm_c": float(v.norm()),
        "plane_cosine": float(u @ v / (u.norm() * v.norm())),
    }
    axes = [ex, ey]
    if not raw:
        weights = model_parameters(model)
        axes = [
            _flatten(normalize_direction(_unflatten(axis, weights), weights, "filter", "none"),
                     weights)
            for axis in axes
        ]  # fmt: skip
    basis = torch.stack(axes, dim=1)  # (dim, 2)
    points = torch.stack([torch.zeros_like(u), u, v], dim=1)  # (dim, 3)
    if raw:  # by construction: A at the origin, B on the x axis
        coords = torch.tensor(
            [[0.0, float(u.norm()), float(v @ ex)], [0.0, 0.0, float(w.norm())]],
            dtype=torch.float64,
        )
    else:
        coords = torch.linalg.lstsq(basis, points).solution  # (2, 3)
    off = (points - basis @ coords).norm(dim=0)
    return Plane(
        directions=[_unflatten(axis, own) for axis in axes],
        coordinates=coords.T.numpy(),
        labels=names,
        off_plane=off.numpy(),
        attrs=attrs,
    )


@in_analysis_mode
def trajectory_plane(
    model: nn.Module,
    trajectories: Mapping[str, Sequence[Mapping[str, Tensor]]],
    epochs: Mapping[str, Sequence[float]] | None = None,
) -> Plane:
    """The top two principal directions of training snapshots around ``model``.

    Args:
        model: The origin (usually the end of one of the trajectories).
        trajectories: Snapshot ``state_dict()`` lists by label, in training order; at least
            three snapshots in each.
        epochs: The epoch of every snapshot, by the same labels (default 0, 1, ...).

    Returns:
        The plane: axes, the end point of each trajectory marked, and every path.

    Raises:
        LandscapeInputError: Fewer than three snapshots in a trajectory, another
            architecture, or snapshots that span less than two dimensions.
    """
    own = model_parameters(model)
    rows, spans = [], {}
    for label, states in trajectories.items():
        if len(states) < 3:
            raise LandscapeInputError(
                f"trajectory {label}: {len(states)} snapshot(s); PCA needs at least 3 "
                "(train with --snapshots 3 or more)"
            )
        start = len(rows)
        rows += [_flat_difference(own, state, f"trajectory {label}") for state in states]
        spans[label] = (start, len(rows))
    matrix = torch.stack(rows).numpy()  # (n, dim) float64
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    if singular.size < 2 or singular[1] <= DEGENERATE * singular[0]:
        raise LandscapeInputError(
            "trajectory: the snapshots span less than two dimensions; give snapshots that move"
        )
    axes = np.stack([_fix_sign(torch.from_numpy(vt[k])).numpy() for k in range(2)])  # (2, dim)
    coords = matrix @ axes.T  # (n, 2), orthonormal axes
    off = np.linalg.norm(matrix - coords @ axes, axis=1)
    variance = singular**2 / max(len(rows) - 1, 1)
    paths = {}
    for label, (first, last) in spans.items():
        given = (epochs or {}).get(label)
        steps = np.arange(last - first, dtype=np.float64) if given is None else np.asarray(given)
        paths[label] = {"coordinates": coords[first:last], "off_plane": off[first:last],
                        "epochs": steps.astype(np.float64)}  # fmt: skip
    ends = [last - 1 for _, last in spans.values()]
    return Plane(
        directions=[_unflatten(torch.from_numpy(axes[k]), own) for k in range(2)],
        coordinates=coords[ends],
        labels=list(spans),
        off_plane=off[ends],
        attrs={
            "pca_explained_variance_x": float(variance[0]),
            "pca_explained_variance_y": float(variance[1]),
            "pca_explained_ratio_x": float(variance[0] / variance.sum()),
            "pca_explained_ratio_y": float(variance[1] / variance.sum()),
            "pca_snapshots": len(rows),
        },
        paths=paths,
    )


def auto_axis(values: np.ndarray, points: int, margin: float = 0.25) -> np.ndarray:
    """``points`` coordinates spanning ``values`` and ``margin`` of their range either side.

    The grid is shifted (by less than a step) so that 0, the origin, is one of its points.

    Example:
        >>> auto_axis(np.array([0.0, 2.0]), 5).tolist()
        [-0.75, 0.0, 0.75, 1.5, 2.25]
    """
    if points < 2:
        raise LandscapeInputError(f"auto:{points}: an automatic axis needs at least 2 points")
    low, high = float(np.min(values)), float(np.max(values))
    span = high - low or max(abs(high), 1.0)
    low, high = low - margin * span, high + margin * span
    step = (high - low) / (points - 1)
    start = np.floor(low / step) * step if low < 0 < high else low
    return start + step * np.arange(points)
