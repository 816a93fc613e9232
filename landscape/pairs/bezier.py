r"""A quadratic Bezier curve of low loss between two networks (Garipov et al. 2018).

.. math::
    \theta(t) = (1 - t)^2\,\theta_0 + 2t(1 - t)\,\theta_c + t^2\,\theta_1, \qquad t \in [0, 1],

with end points :math:`\theta_0` (``model``) and :math:`\theta_1` (``other``) fixed and the
control point :math:`\theta_c` trained, from the midpoint, by SGD with momentum on
:math:`\mathbb{E}_{t \sim U(0, 1)} L(\theta(t))`: one :math:`t` and one training batch per
step (the batches in turn), BatchNorm on batch statistics as in training. Floating-point
buffers are not trained: their control point is the midpoint, so they move on the straight
line. Since :math:`(1 - t)^2 + 2t(1 - t) + t^2 = 1`, the curve lies in the plane
:math:`\theta_0 + a(\theta_c - \theta_0) + b(\theta_1 - \theta_0)` at
:math:`(a, b) = (2t(1 - t), t^2)`, so the surface evaluator draws it as a 2D surface through
those points (:func:`bezier_coordinates`), BatchNorm statistics recomputed at each point as
on the straight path (:mod:`landscape.pairs.path`).

Training and evaluation are resumable (:mod:`landscape.pairs.curve_file`): the t of every
step comes from ``seed`` and the batch from the step number, so a rerun that continues a
killed one ends with the control point of an uninterrupted run.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    call_model,
    in_analysis_mode,
    model_outputs,
    move_batch,
)
from landscape.errors import LandscapeInputError
from landscape.pairs.curve_file import CurveState, initial_slots, read_state, write_state
from landscape.pairs.path import (
    PATH_POINTS,
    PathValues,
    check_batchnorm,
    path_from_values,
    path_grid,
    path_values,
)
from landscape.surface.directions import Direction, interpolation_direction, model_parameters
from landscape.surface.evaluate import PointValues
from landscape.surface.store import SurfaceSpec, SurfaceStore


@dataclass(frozen=True)
class CurveSettings:
    """How the control point is trained and where the curve is evaluated.

    Args:
        steps: SGD steps (one t and one batch each).
        lr: Learning rate.
        momentum: SGD momentum.
        points: Values of t on [0, 1] the trained curve is evaluated at, ends included.
        seed: Seeds the t of every step.
        save_every: Steps between two saves of the training state.
        batchnorm: ``"recompute"`` or ``"interpolate"`` running statistics at each point
            of the evaluation (:mod:`landscape.pairs.path`).
    """

    steps: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    points: int = PATH_POINTS
    seed: int = 0
    save_every: int = 20
    batchnorm: str = "recompute"

    def __post_init__(self) -> None:
        if self.steps < 0 or self.save_every < 1:
            raise LandscapeInputError("curve steps must be >= 0 and save_every >= 1")
        if not (self.lr > 0 and 0 <= self.momentum < 1):
            raise LandscapeInputError(
                f"curve lr {self.lr}, momentum {self.momentum}: need lr > 0, 0 <= momentum < 1"
            )


@dataclass(frozen=True)
class CurveResult:
    """The trained curve: its values along t, control point, steps and file."""

    values: PathValues
    control: dict[str, Tensor]
    steps: int
    path: Path


def bezier_coordinates(t: np.ndarray) -> np.ndarray:
    r"""Plane coordinates :math:`(2t(1 - t), t^2)` of the curve's points, shape ``(k, 2)``."""
    t = np.asarray(t, dtype=np.float64)
    return np.stack([2.0 * t * (1.0 - t), t * t], axis=1)


def bezier_point(
    start: Mapping[str, Tensor], control: Mapping[str, Tensor], end: Mapping[str, Tensor], t: float
) -> dict[str, Tensor]:
    r""":math:`(1 - t)^2 \theta_0 + 2t(1 - t) \theta_c + t^2 \theta_1`, exactly the ends at 0 and 1.

    Example:
        >>> a, c, b = {"w": torch.zeros(1)}, {"w": torch.ones(1)}, {"w": torch.full((1,), 3.0)}
        >>> [bezier_point(a, c, b, t)["w"].item() for t in (0.0, 0.5, 1.0)]
        [0.0, 1.25, 3.0]
    """
    u = 1.0 - t
    return {n: u * u * start[n] + 2.0 * t * u * control[n] + t * t * end[n] for n in start}


@in_analysis_mode
def bezier_curve(
    model: nn.Module,
    other: nn.Module,
    loss_fn: LossFunction,
    data: Mapping[str, Sequence[Batch]],
    out: str | Path,
    settings: CurveSettings | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    info: Mapping[str, str | int | float] | None = None,
) -> CurveResult:
    r"""Train the Bezier curve from ``model`` to ``other``, evaluate it, store it in ``out``.

    Args:
        model: The start :math:`\theta_0` (the teacher); left as it was.
        other: The end :math:`\theta_1`, same architecture (the student); left as it was.
        loss_fn: Batch-mean loss.
        data: Batches per split; the curve is trained on ``data["train"]`` and evaluated
            on every split.
        out: The HDF5 file (:mod:`landscape.pairs.curve_file`).
        settings: Training and evaluation settings (default :class:`CurveSettings`).
        resume: Continue ``out`` where it stopped (the same settings and end points).
        force: Replace an existing ``out``.
        progress: Called with the number of steps (then points) just finished.
        info: Scalar attributes recorded in the file (e.g. checkpoint hashes), compared on
            resume.

    Returns:
        The curve's values (``values.max_loss("train")``), control point and file.
    """
    settings = settings or CurveSettings()
    check_batchnorm(settings.batchnorm, data)
    if "train" not in data or not data["train"]:
        raise LandscapeInputError("bezier_curve trains on data['train']; give train batches")
    t = path_grid(settings.points)
    with analysis_mode(other):
        chord = interpolation_direction(model, other.state_dict())
    start = model_parameters(model)
    with analysis_mode(other):
        end = {n: p.detach().to(start[n]) for n, p in other.named_parameters()}
    midpoint = {n: 0.5 * (start[n] + end[n]) for n in start}
    spec = SurfaceSpec(
        x=t, y=None, directions=[chord], split="both" if "test" in data else "train",
        settings={"kind": "bezier_curve", **_recorded(settings), **dict(info or {})},
        info={"torch": torch.__version__, "python": platform.python_version()},
        extra=initial_slots(midpoint),
    )  # fmt: skip
    with SurfaceStore.open_for_writing(out, spec, resume=resume, force=force) as store:
        state = read_state(store)
        if state.step < settings.steps:
            state = _train(model, loss_fn, data["train"], start, end, state, settings,
                           store, progress)  # fmt: skip
        control = {n: c.to(start[n]) for n, c in state.control.items()}
        pending = store.pending()
        if pending.size:
            values = _curve_values(model, loss_fn, data, start, control, chord, t[pending],
                                   settings.batchnorm)  # fmt: skip
            store.write(pending, values)
            if progress:
                progress(int(pending.size))
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in store.arrays.items()}
    found = {s: PointValues(arrays[f"{s}_loss"], arrays[f"{s}_acc"]) for s in spec_splits(spec)}
    return CurveResult(path_from_values(t, found), control, settings.steps, Path(out))


def spec_splits(spec: SurfaceSpec) -> tuple[str, ...]:
    """The splits a curve file holds."""
    return ("train", "test") if spec.split == "both" else (spec.split,)


def _recorded(settings: CurveSettings) -> dict[str, str | int | float]:
    """The settings a resumed run must match (``save_every`` may change)."""
    return {k: v for k, v in asdict(settings).items() if k != "save_every"}


def _curve_values(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Mapping[str, Sequence[Batch]],
    start: Direction,
    control: Direction,
    chord: Direction,
    t: np.ndarray,
    batchnorm: str,
) -> dict[str, PointValues]:
    """The curve's loss and accuracy at ``t``, as points of the plane (module docstring)."""
    towards_control: Direction = {n: control[n] - start[n] for n in start}
    towards_control.update({n: 0.5 * d for n, d in chord.items() if n not in start})
    return path_values(model, loss_fn, data, [towards_control, chord], bezier_coordinates(t),
                       batchnorm)  # fmt: skip


def _train(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Sequence[Batch],
    start: Direction,
    end: Direction,
    state: CurveState,
    settings: CurveSettings,
    store: SurfaceStore,
    progress: Callable[[int], None] | None,
) -> CurveState:
    """SGD steps ``state.step`` to ``settings.steps`` on the control point, saved as it goes."""
    ts = np.random.default_rng(settings.seed).uniform(size=settings.steps)
    control = {n: c.to(start[n]).requires_grad_(True) for n, c in state.control.items()}
    momentum = {n: m.to(start[n]) for n, m in state.momentum.items()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    first = next(iter(start.values()))
    step = state.step
    with analysis_mode(model, "train"):
        while step < settings.steps:
            inputs, targets = move_batch(batches[step % len(batches)], first.device, first.dtype)
            weights = bezier_point(start, control, end, float(ts[step]))
            fresh = {n: b.clone() for n, b in buffers.items()}  # batch statistics update copies
            outputs = model_outputs(call_model(model, inputs, {**fresh, **weights}))
            grads = torch.autograd.grad(loss_fn(outputs, targets), list(control.values()))
            with torch.no_grad():
                for (name, value), grad in zip(control.items(), grads, strict=True):
                    momentum[name].mul_(settings.momentum).add_(grad)
                    value.sub_(settings.lr * momentum[name])
            step += 1
            if step % settings.save_every == 0 or step == settings.steps:
                state = CurveState(step, {n: c.detach() for n, c in control.items()}, momentum)
                write_state(store, state)
            if progress:
                progress(1)
    return CurveState(step, {n: c.detach() for n, c in control.items()}, momentum)
