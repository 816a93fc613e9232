r"""Maps of the extreme Hessian eigenvalues over a grid of weights (loss-landscape's eigen maps).

At every point :math:`\theta + a\,d_x + b\,d_y` of the grid, :func:`eigen_map` takes the
Hessian of the mean loss over the given batches (:class:`~landscape.operators.hessian.
HessianOperator`, model in eval mode) and runs one Lanczos for both ends of its
spectrum (:func:`~landscape.curvature.eigen.lanczos.lanczos_extremes`): until
:math:`\lambda_{\max}` has a residual of at most ``tol`` :math:`|\lambda_{\max}|` and
:math:`\lambda_{\min}` at most ``tol`` :math:`|\lambda_{\max}|` as well (the smallest
eigenvalue of a trained network sits near 0, where a relative tolerance cannot be met).
Li et al. (2018) draw :math:`|\lambda_{\min} / \lambda_{\max}|` to show where a surface
is convex (near 0) and where it is not.

The file is a surface file (:mod:`landscape.surface.store`) whose value arrays are
``lambda_max``, ``lambda_min`` and ``train_loss``, with the same grid, directions,
resume, lock and crash-safety rules; random directions come from the same seed and
normalization as :func:`~landscape.surface.loss_surface.loss_surface`, so a map and a
surface of one checkpoint and seed share their axes.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.curvature.eigen.lanczos import lanczos_extremes
from landscape.errors import LandscapeInputError, NonFiniteLossError
from landscape.operators.batching import curvature_batches, gather_examples
from landscape.operators.hessian import HessianOperator
from landscape.operators.mean_loss import (
    ParameterFilter,
    ParameterSelection,
    select_parameters,
)
from landscape.operators.memory import resolve_budget
from landscape.surface.directions import Direction
from landscape.surface.evaluate import grid_points
from landscape.surface.loss_surface import (
    AxisRange,
    DirectionSpec,
    build_directions,
    direction_settings,
    grid_axes,
)
from landscape.surface.store import SurfaceSpec, SurfaceStore

QUANTITIES = ("lambda_max", "lambda_min", "train_loss")
MAX_POINTS = 441
"""Points (21 x 21) above which a map is refused without ``force``: each is a Lanczos run
of tens of Hessian-vector products, i.e. hundreds of gradient passes over the data."""


@dataclass
class EigenMapResult:
    """What :func:`eigen_map` did.

    Attributes:
        out: The HDF5 file.
        shape: ``(ny, nx)`` or ``(nx,)``.
        points: Grid points in all.
        computed: Points computed by this call (the rest were done before: resume).
        seconds: Wall time of this call.
        matvecs: Hessian-vector products this call made.
        converged: Points of this call where both eigenvalues met their tolerance.
    """

    out: str
    shape: list[int]
    points: int
    computed: int
    seconds: float
    matvecs: int
    converged: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary of ``flatscape eigenmap --json``."""
        return asdict(self)


@in_analysis_mode
def eigen_map(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    out: str | Path,
    *,
    x_range: AxisRange = "-1:1:11",
    y_range: AxisRange | None = "-1:1:11",
    directions: DirectionSpec | Sequence[DirectionSpec] = "random",
    normalization: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
    tol: float = 1e-3,
    samples: int | None = None,
    batch_size: int | None = None,
    max_memory: int | str | None = "auto",
    params: ParameterSelection = None,
    resume: bool = False,
    force: bool = False,
    settings: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
    progress: Callable[[int], object] | None = None,
    warm_start: bool = True,
) -> EigenMapResult:
    r"""The largest and smallest Hessian eigenvalue at every grid point, into an HDF5 file.

    Args:
        model: Any module (never modified: a copy is moved).
        loss_fn: Mean loss of a batch.
        batches: The data the Hessian is taken over (a list or DataLoader).
        out: The ``.h5`` file.
        x_range: ``"MIN:MAX:N"``, ``(MIN, MAX, N)`` or coordinates.
        y_range: The same for y; None gives a 1D map.
        directions: As for :func:`~landscape.surface.loss_surface.loss_surface`:
            ``"random"`` or a direction per axis.
        normalization: Of random directions.
        ignore: Of random directions.
        seed: Seed of the random directions and of Lanczos's start vectors.
        tol: Relative accuracy of :math:`\lambda_{\max}`; :math:`\lambda_{\min}` to
            ``tol`` times :math:`|\lambda_{\max}|`.
        samples: First examples of ``batches`` (default all).
        batch_size: Batches of this size with graphs rebuilt at every product; default:
            ``flatscape hessian``'s batches with their graphs kept, within ``max_memory``
            (:func:`~landscape.operators.batching.curvature_batches`).
        max_memory: Bytes the Hessian's kept gradient graphs and products may hold:
            ``"auto"`` (half the memory available at the start), None (no limit) or bytes.
        params: The Hessian block measured at each point (names, globs or a
            :class:`~landscape.operators.mean_loss.ParameterFilter`; default all
            trainable parameters); the grid still moves every parameter.
        resume: Continue ``out`` where a killed run stopped.
        force: Replace ``out``; also allows more than :data:`MAX_POINTS` points.
        settings: More attributes a resumed run must match.
        info: More attributes recorded, not compared.
        progress: Called with the number of points just finished.
        warm_start: Start each point's Lanczos run from the two Ritz vectors of a
            neighbour finished in this call (the point to its left, else the one below:
            :class:`NeighbourStarts`); the tolerance holds as from a random start. False
            starts every point from the seed's random vector.

    Raises:
        LandscapeInputError: A bad range or option, too many points without ``force``,
            an existing ``out`` without ``resume``/``force``, or a locked or other file.
    """
    x, y, total = grid_axes(x_range, y_range, force)
    check_map_size(total, force)
    if resume and force:
        raise LandscapeInputError("resume and force contradict; choose one")
    if not 0 < tol < 1:
        raise LandscapeInputError(f"tol {tol}: give a relative tolerance in (0, 1)")
    ndirs = 1 if y is None else 2
    specs = [directions] * ndirs if isinstance(directions, str | Mapping) else list(directions)
    if len(specs) != ndirs or any(s == "eigen" for s in specs if isinstance(s, str)):
        raise LandscapeInputError("directions: give 'random' or one direction per axis")
    if batch_size is not None and max_memory not in ("auto", None):
        raise LandscapeInputError(
            f"max_memory {max_memory}: nothing to bound with batch_size, whose graphs are "
            "rebuilt at every product; pass max_memory (graphs kept within it) or batch_size"
        )
    data, keep_graphs = curvature_batches(*gather_examples(batches, samples), batch_size)
    names = None if params is None else select_parameters(model, params)  # fails here
    budget = resolve_budget(max_memory, data[0][1].device) if keep_graphs else None
    made, _ = build_directions(model, specs, normalization=normalization, ignore=ignore,
                               seed=seed)  # fmt: skip
    kinds = [s if isinstance(s, str) else "given" for s in specs]
    recorded = {**direction_settings(kinds, normalization, ignore), "seed": seed, "tol": tol,
                "bn_mode": "eval", "samples": samples if samples is not None else "all",
                "train_examples": sum(int(b[1].shape[0]) for b in data),
                "loss": getattr(loss_fn, "__name__", type(loss_fn).__name__),
                "params": _describe(params), **(settings or {})}  # fmt: skip
    info = {**(info or {}), "warm_start": warm_start}
    spec = SurfaceSpec(x, y, made, "train", recorded, info, quantities=QUANTITIES)
    began = time.perf_counter()
    matvecs = converged = computed = 0
    with SurfaceStore.open_for_writing(out, spec, resume=resume, force=force) as store:
        coords = grid_points(store.x, store.y)
        if progress is not None:
            progress(int(store.done.sum()))
        moved = _Moved(model, store.directions())
        starts = NeighbourStarts(len(store.x))
        for index in store.pending():
            start = starts.near(index) if warm_start else None
            values, products, ok, vectors = _extremes(
                moved.at(coords[index]), loss_fn, data, tol, seed, keep_graphs, budget, names,
                start,
            )  # fmt: skip
            starts.keep(index, vectors)
            store.write_arrays(np.array([index]), values)
            matvecs, converged, computed = matvecs + products, converged + ok, computed + 1
            if progress is not None:
                progress(1)
    seconds = round(time.perf_counter() - began, 3)
    shape = [len(v) for v in (y, x) if v is not None]
    return EigenMapResult(str(out), shape, total, computed, seconds, matvecs, converged)


def check_map_size(total: int, force: bool = False) -> None:
    """Refuse maps above :data:`MAX_POINTS` points unless forced."""
    if total > MAX_POINTS and not force:
        raise LandscapeInputError(
            f"the eigenvalue map has {total:,} points (more than {MAX_POINTS}); each is a "
            "Lanczos run of tens of Hessian-vector products: use a coarser grid or pass --force"
        )


def _describe(params: ParameterSelection) -> str:
    """The parameter selection as a file attribute: ``all``, or its globs or names."""
    if params is None:
        return "all"
    if isinstance(params, ParameterFilter):
        return json.dumps(params.describe())
    names = [p if isinstance(p, str) else f"tensor{tuple(p.shape)}" for p in params]
    return json.dumps(names)


class _Moved:
    """A copy of the model whose parameters are set to each grid point in turn."""

    def __init__(self, model: nn.Module, directions: Sequence[Direction]) -> None:
        self.model = copy.deepcopy(model).eval()
        tensors = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        self.targets = {name: tensors[name] for name in directions[0]}
        self.base = {name: t.detach().clone() for name, t in self.targets.items()}
        self.directions = [
            {name: d[name].to(self.base[name]) for name in self.base} for d in directions
        ]

    def at(self, point: np.ndarray) -> nn.Module:
        with torch.no_grad():
            for name, tensor in self.targets.items():
                value = self.base[name].clone()
                for coefficient, direction in zip(point, self.directions, strict=True):
                    value.add_(direction[name], alpha=float(coefficient))
                tensor.copy_(value)
        return self.model


class NeighbourStarts:
    """Ritz vectors of the points finished lately: the warm starts of their neighbours.

    Points are computed in flat order (row by row, :func:`~landscape.surface.evaluate.
    grid_points`), so the neighbour of point ``k`` already done is ``k - 1`` (to its left)
    or, at the start of a row, ``k - nx`` (below it); only the last ``nx`` points' vectors
    are kept.
    """

    def __init__(self, nx: int) -> None:
        self.nx = nx
        self.kept: dict[int, tuple[Tensor, Tensor] | None] = {}

    def near(self, index: int) -> tuple[Tensor, Tensor] | None:
        """The (top, bottom) vectors of a finished neighbour of ``index``, or None."""
        left = index - 1 if index % self.nx else None
        for neighbour in (left, index - self.nx):
            if self.kept.get(neighbour) is not None:
                return self.kept[neighbour]
        return None

    def keep(self, index: int, vectors: tuple[Tensor, Tensor] | None) -> None:
        """Remember ``index``'s vectors; forget those no later point can use."""
        self.kept[index] = vectors
        for old in [k for k in self.kept if k < index - self.nx]:
            del self.kept[old]


def _extremes(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Sequence[Batch],
    tol: float,
    seed: int,
    keep_graphs: bool,
    graph_budget: int | None,
    params: list[str] | None = None,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[dict[str, np.ndarray], int, bool, tuple[Tensor, Tensor] | None]:
    """lambda_max, lambda_min and the loss at the model's weights, with their cost.

    Returns the values, the products spent, whether both met the tolerance and the two
    Ritz vectors (a neighbour's warm start).

    Where the loss is NaN or inf (the weights diverged), both eigenvalues are NaN: the
    point is a gap of the map, final like any other, as a surface's diverged points are.
    """
    try:
        operator = HessianOperator(
            model, loss_fn, data, params=params, keep_graphs=keep_graphs, graph_budget=graph_budget
        )
    except NonFiniteLossError as err:
        gap = {"lambda_max": np.array([np.nan]), "lambda_min": np.array([np.nan])}
        return {**gap, "train_loss": np.array([err.loss])}, 0, False, None
    warm = None if start is None else torch.cat(start, dim=1)
    top, bottom = lanczos_extremes(operator, tol=tol, seed=seed, start=warm)
    values = {
        "lambda_max": np.array([float(top.eigenvalues[0])]),
        "lambda_min": np.array([float(bottom.eigenvalues[0])]),
        "train_loss": np.array([float(operator.loss)]),
    }
    return values, top.matvecs, top.converged, (top.eigenvectors, bottom.eigenvectors)
