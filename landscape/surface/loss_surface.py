"""One call from a model, a loss and data to a finished (or resumed) HDF5 loss surface.

:func:`loss_surface` is what ``flatscape surface`` runs: it turns axis ranges into grids,
builds the directions (filter-normalized Gaussian, top Hessian eigenvectors, or any given
direction such as the line to another checkpoint), batches the data at the fastest
forward batch size, opens or resumes the store and evaluates every pending point.

How the work is shared among processes is a :class:`SingleProcess` (the default) or the
torchrun version from :mod:`landscape.distributed.surface`; the rest does not change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._types import Batch, LossFunction, analysis_mode, in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.operators.batching import gather_examples, split_batches
from landscape.operators.memory import describe_budget, format_size, peak_bytes, resolve_budget
from landscape.surface.directions import Direction, hessian_directions, random_direction
from landscape.surface.evaluate import (
    VECTORIZE,
    VMAP_MAX_BATCH,
    VMAP_WIDTH,
    SurfaceEvaluator,
    compute_surface,
    grid_points,
    has_convolutions,
)
from landscape.surface.forward_cost import CANDIDATES, fastest_batch_size, forward_bytes
from landscape.surface.grid import Axis, check_grid_size, parse_axis_spec
from landscape.surface.plane import Plane
from landscape.surface.store import SPLITS, SurfaceSpec, SurfaceStore

DirectionSpec = str | Mapping[str, Tensor]
"""``"random"``, ``"eigen"``, or a direction itself (parameter name -> tensor)."""
AxisRange = str | tuple[float, float, int] | Sequence[float] | np.ndarray
DEFAULT_NON_TENSOR_BATCH = 256
BLOCK_BYTES = 256 * 2**20
"""Most bytes a block's stacked weights take (fewer when the memory budget is tight)."""


class SingleProcess:
    """How :func:`loss_surface` shares its work: here it does not (one process)."""

    is_main = True

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value on every process: the value itself."""
        return obj

    @contextmanager
    def open_store(self, factory: Callable[[], SurfaceStore]) -> Iterator[SurfaceStore]:
        """Open the store with ``factory`` and close it when the block ends."""
        with factory() as store:
            yield store

    def compute(self, *args: Any, **kwargs: Any) -> None:
        """Evaluate the pending points (:func:`~landscape.surface.evaluate.compute_surface`)."""
        compute_surface(*args, **kwargs)


@dataclass
class SurfaceResult:
    """What :func:`loss_surface` did.

    Attributes:
        out: The HDF5 file.
        shape: ``(nx,)`` or ``(ny, nx)``.
        points: Grid points in all.
        computed: Points computed by this call (the rest were done before: resume).
        seconds: Wall time of the evaluation.
        batch_size: Examples per forward pass.
        vectorize: Whether grid points went through ``vmap`` (``"always"``/``"never"``).
        origin: Every stored value at the origin, when the grid contains it.
        memory: ``{"budget", "forward_bytes", "block_bytes", "block_points", "peak"}``:
            the budget, what one forward pass and a block's stacked weights may work in,
            the most points per block, and the process's peak (bytes).
    """

    out: str
    shape: list[int]
    points: int
    computed: int
    seconds: float
    batch_size: int
    vectorize: str
    origin: dict[str, float] | None
    memory: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary of ``flatscape surface --json``."""
        return asdict(self)


def axis_coordinates(axis: AxisRange, name: str = "x_range", force: bool = False) -> np.ndarray:
    """Grid coordinates from ``"MIN:MAX:N"``, ``(MIN, MAX, N)`` or explicit values.

    Example:
        >>> axis_coordinates((-1, 1, 3)).tolist(), axis_coordinates("0:1:2").tolist()
        ([-1.0, 0.0, 1.0], [0.0, 1.0])
    """
    parsed = _axis(axis, name)
    check_grid_size(len(parsed), None, force)
    return _allocated(parsed)


def grid_axes(
    x_range: AxisRange, y_range: AxisRange | None, force: bool = False
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Both axes' coordinates and the number of points, the size checked before allocating.

    Raises:
        LandscapeInputError: A bad range, or more points than
            :func:`~landscape.surface.grid.check_grid_size` allows.
    """
    x = _axis(x_range, "x_range")
    y = None if y_range is None else _axis(y_range, "y_range")
    total = check_grid_size(len(x), None if y is None else len(y), force)
    return _allocated(x), None if y is None else _allocated(y), total


def _allocated(axis: Axis | np.ndarray) -> np.ndarray:
    return axis.coordinates() if isinstance(axis, Axis) else axis


def _axis(axis: AxisRange, name: str) -> Axis | np.ndarray:
    """A parsed ``MIN:MAX:N`` (not yet allocated), or validated explicit coordinates."""
    if isinstance(axis, str):
        return parse_axis_spec(axis, name)
    if isinstance(axis, tuple) and len(axis) == 3 and isinstance(axis[2], int):
        return parse_axis_spec(f"{axis[0]}:{axis[1]}:{axis[2]}", name)
    values = np.asarray(axis, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0):
        raise LandscapeInputError(f"{name}: give MIN:MAX:N or finite, increasing coordinates")
    return values


def direction_settings(kinds: Sequence[str], normalization: str, ignore: str) -> dict[str, str]:
    """The root attributes that say how each axis's direction was made.

    ``normalization``/``ignore`` describe the x axis (``"none"`` for a direction used as it
    is); ``y_normalization``/``y_ignore`` are added where the y axis differs.
    """
    made = [(normalization, ignore) if kind == "random" else ("none", "none") for kind in kinds]
    settings = {"direction": kinds[0], "normalization": made[0][0], "ignore": made[0][1]}
    if len(made) == 2 and made[1] != made[0]:
        settings.update(y_normalization=made[1][0], y_ignore=made[1][1])
    names = {"random": "random", "given": "given", "eigen": "eigenvector"}
    eigen = 0
    for axis, kind in zip("xy", kinds, strict=False):
        eigen += kind == "eigen"
        settings[f"{axis}_direction"] = names[kind] + (f" {eigen}" if kind == "eigen" else "")
    return settings


def build_directions(
    model: nn.Module,
    specs: Sequence[DirectionSpec],
    *,
    normalization: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
    loss_fn: LossFunction | None = None,
    hessian_batches: Sequence[Batch] | None = None,
    graph_budget: int | None = None,
) -> tuple[list[Direction], dict[str, Any]]:
    """One direction per axis from ``"random"``, ``"eigen"`` or a given direction.

    Random directions are drawn in axis order from one generator seeded with ``seed``;
    ``"eigen"`` axes take the top Hessian eigenvectors of ``loss_fn`` over
    ``hessian_batches`` (the first for the first such axis), its gradient graphs kept
    within ``graph_budget`` bytes (default: no limit).

    Returns:
        The directions and information to record (the eigenvalues, for eigen axes).
    """
    generator = torch.Generator().manual_seed(seed)
    count = sum(spec == "eigen" for spec in specs if isinstance(spec, str))
    eigen: list[Direction] = []
    info: dict[str, Any] = {}
    if count:
        if loss_fn is None or not hessian_batches:
            raise LandscapeInputError("directions 'eigen' need the loss and hessian_batches")
        eigen, values = hessian_directions(
            model, loss_fn, hessian_batches, count, seed, graph_budget=graph_budget
        )
        info["eigenvalues"] = values.double().cpu().numpy()
    directions = []
    for spec in specs:
        if isinstance(spec, Mapping):
            directions.append(dict(spec))
        elif spec == "random":
            directions.append(random_direction(model, generator, normalization, ignore))
        elif spec == "eigen":
            directions.append(eigen.pop(0))
        else:
            raise LandscapeInputError(
                f"directions {spec!r}: choose 'random', 'eigen' or give a direction"
            )
    return directions, info


def _kinds(specs: Sequence[DirectionSpec]) -> list[str]:
    return [spec if isinstance(spec, str) else "given" for spec in specs]


def _split_data(data: Mapping[str, Iterable[Batch]] | Iterable[Batch], split: str | None):
    """``{split: batches}`` with the split name checked."""
    if isinstance(data, Mapping):
        unknown = [name for name in data if name not in ("train", "test")]
        if unknown or not data:
            raise LandscapeInputError("data: give {'train': ..., 'test': ...} or one iterable")
        split = split or ("both" if len(data) == 2 else next(iter(data)))
        missing = [name for name in SPLITS.get(split, ()) if name not in data]
        if split not in SPLITS or missing:
            raise LandscapeInputError(f"split {split!r}: the data has {', '.join(data)}")
        return {name: data[name] for name in SPLITS[split]}, split
    if split not in (None, "train"):
        raise LandscapeInputError(f"split {split!r}: one iterable of batches is the train split")
    return {"train": data}, "train"


@dataclass
class ForwardPlan:
    """How one forward pass and one block of points fit the memory budget.

    Attributes:
        budget: Bytes (None: no limit).
        per_example: Working memory of a no-grad forward pass per example
            (:func:`~landscape.surface.forward_cost.forward_bytes`); None for non-tensor inputs.
        point_bytes: The weights of one grid point (every parameter and buffer: an upper
            bound of what a block stacks per point).
        widths: Points evaluated at once by ``vmap`` on batches up to ``VMAP_MAX_BATCH``
            (1 when the evaluator loops).
    """

    budget: int | None
    per_example: float | None
    point_bytes: int
    widths: int

    def forward(self, size: int) -> float:
        """Bytes a forward pass of ``size`` examples works in (times the vmap width)."""
        if self.per_example is None:
            return 0.0
        width = self.widths if size <= VMAP_MAX_BATCH else 1
        return self.per_example * size * width

    def fits(self, size: int) -> bool:
        """Whether a forward of ``size`` examples and one point's weights fit."""
        return self.budget is None or self.forward(size) + self.point_bytes <= self.budget

    def largest(self) -> int:
        """The most examples per forward pass that fit (0: not even one)."""
        low, high = 0, 1
        while self.fits(high) and high < 2**24:
            low, high = high, 2 * high
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self.fits(middle) else (low, middle)
        return low

    def block_bytes(self, size: int) -> int:
        """What a block's stacked weights may take beside a forward of ``size`` examples."""
        if self.budget is None:
            return BLOCK_BYTES
        return int(min(BLOCK_BYTES, self.budget - self.forward(size)))

    def check(self, size: int) -> None:
        """Raise, with the numbers, if a forward of ``size`` examples does not fit."""
        if self.fits(size):
            return
        largest = self.largest()
        hint = f"pass a batch size of at most {largest} or " if largest else ""
        width = self.widths if size <= VMAP_MAX_BATCH else 1
        at_once = f", {width} points at once" if width > 1 else ""
        raise LandscapeInputError(
            f"max_memory {describe_budget(self.budget)}: a forward pass of {size} example"
            f"{'' if size == 1 else 's'} works "
            f"in {format_size(self.forward(size))} ({format_size(self.per_example or 0)} per "
            f"example{at_once}) beside {format_size(self.point_bytes)} of weights per grid "
            f"point; {hint}raise max_memory"
        )

    def to_dict(self, size: int) -> dict[str, Any]:
        """The memory record of the JSON summary, at batch size ``size``."""
        return {
            "budget": self.budget,
            "forward_bytes": self.forward(size),
            "block_bytes": self.block_bytes(size),
        }


def forward_plan(model: nn.Module, inputs: Any, budget: int | None, vectorize: str) -> ForwardPlan:
    """Measure a forward pass per example and the weights per point, against ``budget``.

    First the cheap estimate (live module outputs x 2, forward hooks); only when the
    budget could bind on it (a batch-size candidate or a full block would not fit) the
    exact count of live tensors, whose dispatch mode costs about 1.5 s to start.
    """
    point = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    vectorized = vectorize == "always" or (vectorize == "auto" and not has_convolutions(model))
    widths = VMAP_WIDTH if vectorized else 1
    if not isinstance(inputs, Tensor):
        return ForwardPlan(budget, None, point, widths)
    with analysis_mode(model, "eval"):
        estimate = ForwardPlan(budget, forward_bytes(model, inputs, exact=False), point, widths)
        n = int(inputs.shape[0])
        if budget is None or (
            all(estimate.fits(min(c, n)) for c in CANDIDATES)
            and estimate.block_bytes(min(max(CANDIDATES), n)) >= BLOCK_BYTES
        ):
            return estimate  # the budget is far away: the cheap estimate settles it
        return ForwardPlan(budget, forward_bytes(model, inputs), point, widths)


def _batch_size(
    model: nn.Module,
    examples: dict[str, tuple[Any, Tensor]],
    given: int | str,
    processes: SingleProcess,
    plan: ForwardPlan,
) -> int:
    """The forward batch size: given, or the fastest within the memory budget.

    Timed on rank 0 and sent to all.
    """
    if given != "auto":
        if not isinstance(given, int) or given < 1:
            raise LandscapeInputError(f"batch_size {given!r}: give a positive integer or 'auto'")
        plan.check(given)
        return given
    plan.check(1)
    size = None
    if processes.is_main:
        inputs = next(iter(examples.values()))[0]
        if isinstance(inputs, Tensor):
            n = int(inputs.shape[0])  # candidates above it collapse to it
            fitting = [c for c in CANDIDATES if plan.fits(min(c, n))] or [plan.largest()]
            size, _ = fastest_batch_size(model, inputs, fitting)
        else:
            size = DEFAULT_NON_TENSOR_BATCH
    return processes.broadcast(size)


def _versions() -> dict[str, str]:
    """Package versions recorded in every file (informational, not compared on resume)."""
    from importlib.metadata import version

    import h5py

    return {
        "flatscape_version": version("flatscape"),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
    }


def _origin(store: SurfaceStore) -> dict[str, float] | None:
    coords = grid_points(store.x, store.y)
    origin = np.flatnonzero(np.all(coords == 0.0, axis=1))
    if not origin.size:
        return None
    return {key: float(a.reshape(-1)[origin[0]]) for key, a in store.arrays.items()}


@in_analysis_mode
def loss_surface(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Mapping[str, Iterable[Batch]] | Iterable[Batch],
    out: str | Path,
    *,
    x_range: AxisRange = "-1:1:51",
    y_range: AxisRange | None = None,
    directions: DirectionSpec | Sequence[DirectionSpec] = "random",
    split: str | None = None,
    samples: int | None = None,
    normalization: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
    batch_size: int | str = "auto",
    vectorize: str = "auto",
    max_memory: int | str | None = "auto",
    hessian_data: Iterable[Batch] | None = None,
    plane: Plane | None = None,
    resume: bool = False,
    force: bool = False,
    settings: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
    progress: Callable[[int], object] | None = None,
    processes: SingleProcess | None = None,
) -> SurfaceResult:
    r"""Loss and accuracy of ``model`` on a 1D or 2D grid of weights, into an HDF5 store.

    The value at ``(a, b)`` is the mean loss (and accuracy in percent) of the weights
    :math:`\\theta + a\\,d_x + b\\,d_y` in eval mode, over the first ``samples`` examples
    of each split. Points are written as they finish; ``resume`` continues a killed run.

    Args:
        model: Any module (never modified).
        loss_fn: Mean loss of a batch, e.g. ``torch.nn.functional.cross_entropy``.
        data: A DataLoader or list of batches (the train split), or
            ``{"train": ..., "test": ...}``.
        out: The ``.h5`` file (loss-landscape's layout, docs/formats.md).
        x_range: ``"MIN:MAX:N"``, ``(MIN, MAX, N)`` or coordinates of the x axis.
        y_range: The same for the y axis; None gives a 1D curve.
        directions: One spec for every axis or one per axis: ``"random"``
            (filter-normalized Gaussian by default), ``"eigen"`` (top Hessian
            eigenvectors over ``hessian_data``, default the train split) or a direction
            (e.g. :func:`~landscape.surface.directions.interpolation_direction`).
        split: ``"train"``, ``"test"`` or ``"both"`` (default: every split in ``data``).
        samples: First examples of each split (default: all).
        normalization: Of random directions: ``"filter"``, ``"layer"`` or ``"none"``.
        ignore: Of random directions: ``"biasbn"`` (zero biases and norm layers) or ``"none"``.
        seed: Seed of the random directions (and of Lanczos for eigen directions).
        batch_size: Examples per forward pass, or ``"auto"`` (the fastest, measured).
        vectorize: ``"auto"``, ``"always"`` or ``"never"`` (``torch.func.vmap`` over points).
        max_memory: Bytes a forward pass and a block of points may work in: ``"auto"``
            (half the memory available at the start), None (no limit) or bytes for the
            whole process. The forward pass is measured per example
            (:func:`~landscape.surface.forward_cost.forward_bytes`); automatic batch sizes
            above the budget are not tried, blocks shrink to fit, and a given batch size
            that does not fit raises with the one that does.
        hessian_data: Batches the eigen directions' Hessian is taken over (default: the
            train split).
        plane: A plane through models (:mod:`landscape.surface.plane`): its axes are the
            directions, and the file also keeps where the models sit, their values there
            (``marks/``) and any paths (``paths/``).
        resume: Continue ``out`` where a killed run stopped.
        force: Replace ``out`` (also allows grids above 1,000,000 points).
        settings: More attributes a resumed run must match (e.g. a checkpoint hash).
        info: More attributes recorded but not compared (e.g. paths).
        progress: Called with the number of points just finished.
        processes: How the work is shared (default: this process alone).

    Raises:
        LandscapeInputError: a bad range, direction or option, an existing ``out``
            without ``resume``/``force``, a locked file, or a resumed file made otherwise.
    """
    processes = processes or SingleProcess()
    x, y, total = grid_axes(x_range, y_range, force)
    ndirs = 1 if y is None else 2
    if plane is not None:
        if y is None:
            raise LandscapeInputError("plane: a plane needs a 2D grid; give y_range")
        directions = plane.directions
    specs = [directions] * ndirs if isinstance(directions, str | Mapping) else list(directions)
    if len(specs) != ndirs:
        raise LandscapeInputError(f"directions: {len(specs)} given for {ndirs} axes")
    if vectorize not in VECTORIZE:
        raise LandscapeInputError(f"vectorize {vectorize!r}: choose one of {', '.join(VECTORIZE)}")
    out = Path(out)
    if resume and force:
        raise LandscapeInputError("resume and force contradict; choose one")
    splits, split = _split_data(data, split)
    examples = {name: gather_examples(batches, samples) for name, batches in splits.items()}
    first = next(iter(examples.values()))[0]
    device = first.device if isinstance(first, Tensor) else torch.device("cpu")
    plan = forward_plan(model, first, resolve_budget(max_memory, device), vectorize)
    size = _batch_size(model, examples, batch_size, processes, plan)
    batched = {name: split_batches(*pair, size) for name, pair in examples.items()}
    kinds = _kinds(specs)
    recorded: dict[str, Any] = {
        **direction_settings(kinds, normalization, ignore), "seed": seed, "bn_mode": "eval",
        "loss": getattr(loss_fn, "__name__", type(loss_fn).__name__),
        "samples": samples if samples is not None else "all", **(settings or {}),
    }  # fmt: skip
    recorded.update({f"{s}_examples": int(t.shape[0]) for s, (_, t) in examples.items()})
    extra = {"batch_size": size, **_versions(), **(plane.attrs if plane else {}), **(info or {})}

    def open_store() -> SurfaceStore:
        hessian_batches = batched.get("train")
        if hessian_data is not None:
            hessian_batches = split_batches(*gather_examples(hessian_data, samples), size)
        made, made_info = _directions_for(out, resume, model, specs, kinds, normalization,
                                          ignore, seed, loss_fn, hessian_batches,
                                          plan.budget)  # fmt: skip
        marked = _marks(model, loss_fn, plane, batched, vectorize) if plane else {}
        spec = SurfaceSpec(x, y, made, split, recorded, {**extra, **made_info}, marked)
        return SurfaceStore.open_for_writing(out, spec, resume=resume, force=force)

    start = time.perf_counter()
    with processes.open_store(open_store) as store:
        already = int(store.done.sum())
        evaluator = SurfaceEvaluator(
            model, loss_fn, store.directions(), vectorize, plan.block_bytes(size)
        )
        if progress is not None:
            progress(already)
        processes.compute(
            evaluator, batched, grid_points(store.x, store.y), store.pending(), store.write,
            progress,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        origin = _origin(store) if processes.is_main else None
    memory = {**plan.to_dict(size), "block_points": evaluator.max_block,
              "peak": peak_bytes(device)}  # fmt: skip
    return SurfaceResult(str(out), [len(v) for v in (y, x) if v is not None], total,
                         total - already, round(seconds, 3), size, evaluator.vectorize,
                         origin, memory)  # fmt: skip


def _marks(
    model: nn.Module,
    loss_fn: LossFunction,
    plane: Plane,
    batched: Mapping[str, Sequence[Batch]],
    vectorize: str,
) -> dict[str, np.ndarray]:
    """The plane's arrays, with the loss and accuracy at every marked model's coordinates."""
    arrays = plane.extra()
    evaluator = SurfaceEvaluator(model, loss_fn, plane.directions, vectorize)
    for split, batches in batched.items():
        values = evaluator.evaluate(batches, plane.coordinates)
        arrays[f"marks/{split}_loss"], arrays[f"marks/{split}_acc"] = values.loss, values.acc
    return arrays


def _directions_for(
    out: Path,
    resume: bool,
    model: nn.Module,
    specs: Sequence[DirectionSpec],
    kinds: Sequence[str],
    normalization: str,
    ignore: str,
    seed: int,
    loss_fn: LossFunction,
    hessian_batches: Sequence[Batch] | None,
    graph_budget: int | None,
) -> tuple[list[Direction], dict[str, Any]]:
    """Directions for a new file, or the stored ones when an eigen run resumes.

    Lanczos is costly, so eigen directions are read back; the settings that determine them
    are still compared.
    """
    if resume and "eigen" in kinds and out.exists():
        with SurfaceStore.read(out) as stored:
            return stored.directions(), {}
    return build_directions(
        model, specs, normalization=normalization, ignore=ignore, seed=seed, loss_fn=loss_fn,
        hessian_batches=hessian_batches, graph_budget=graph_budget,
    )  # fmt: skip
