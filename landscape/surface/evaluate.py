r"""Loss and accuracy of a model at many points :math:`\theta + a\,d_x + b\,d_y`.

For data batches :math:`B_1, \dots, B_K` of sizes :math:`n_k`, :math:`N = \sum_k n_k`, and a
loss function returning a batch's *mean* loss :math:`\ell_k`, the value stored at a point is

.. math::
    L(\theta') = \frac{1}{N} \sum_k n_k\, \ell_k(\theta'), \qquad
    \text{acc}(\theta') = \frac{100}{N} \#\{\text{examples with } \arg\max f = y\},

accumulated in float64: the mean of the per-example losses whatever the batch sizes, and
the accuracy in percent, as loss-landscape stores it. For a token loss (one carrying
``count``), :math:`n_k` is the batch's counted tokens (:func:`landscape._types.batch_weight`),
so the value is the mean over all counted tokens.

Evaluation is batched over points: a *block* of grid points is built as stacked weights
``(G, *shape)``, then every data batch is evaluated at all ``G`` points before the next batch
is read, so a data set is read once per block, not once per point. For each point the
model's parameter slots are pointed at that point's weights (:class:`landscape.surface.slots.
TensorSlots`, what :func:`torch.func.functional_call` does, without its per-call cost) and
pointed back when the block ends, also on an exception: the model's own tensors are never
written to. With ``vectorize`` the points of a block go through :func:`torch.func.vmap`
together (with ``functional_call``): that pays when one forward pass is too
small to keep the CPU busy (small MLPs, small batches) and costs time on convolutions, so
``"auto"`` never vectorizes a model with convolutions or batches above
:data:`VMAP_MAX_BATCH` examples, and otherwise times both ways on the first batch and keeps
the faster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_weight,
    call_model,
    in_analysis_mode,
    model_outputs,
    move_batch,
)
from landscape.errors import LandscapeInputError
from landscape.surface.directions import Direction
from landscape.surface.slots import TensorSlots
from landscape.timing import clock_for

VECTORIZE = ("auto", "always", "never")
VMAP_WIDTH = 32
"""Points per ``vmap`` call: wide enough to amortize per-call overhead, small enough for cache."""
VMAP_MAX_BATCH = 256
"""``"auto"`` only tries ``vmap`` on batches up to this size: on larger ones the loop's own
forward pass keeps the CPU busy and ``vmap`` measured slower (MLPs of width 100 and up)."""


@dataclass(frozen=True)
class PointValues:
    """Loss and accuracy at ``k`` points, float64; accuracy in percent, NaN without labels."""

    loss: np.ndarray
    acc: np.ndarray


def grid_points(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Coordinates of every grid point, shape ``(nx * ny, 2)`` or ``(nx, 1)``.

    Point ``k`` is ``(x[k % nx], y[k // nx])``: the flat index of row ``j``, column ``i`` of
    a ``(ny, nx)`` array, so values can be written with ``array.reshape(-1)[k]``.
    """
    if y is None:
        return np.asarray(x, dtype=np.float64)[:, None]
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx.reshape(-1), yy.reshape(-1)], axis=1).astype(np.float64)


def correct_count(outputs: Tensor, targets: Tensor) -> Tensor | None:
    """Top-1 hits along the last axis, or None when targets are not class indices.

    ``outputs`` may carry leading point axes: ``(..., n, C)`` against targets ``(n,)``.
    """
    if targets.dtype.is_floating_point or targets.dim() != 1 or outputs.dim() < 2:
        return None
    return (outputs.argmax(dim=-1) == targets).sum(dim=-1)


def has_convolutions(model: nn.Module) -> bool:
    """Whether the model has a convolution (vmap turns those into slow grouped ones)."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


class SurfaceEvaluator:
    r"""Evaluates a model's mean loss and accuracy at points along fixed directions.

    Args:
        model: Any module; evaluated in eval mode (restored afterwards), its parameters and
            buffers are never modified.
        loss_fn: ``loss_fn(outputs, targets)`` returning the *mean* loss of a batch, e.g.
            ``torch.nn.functional.cross_entropy``; must work under ``vmap`` to vectorize.
        directions: One or two directions (name to tensor, see :mod:`landscape.surface.directions`);
            names may be parameters or buffers; a name missing from a direction counts as 0.
        vectorize: ``"auto"``, ``"always"`` or ``"never"`` (see the module docstring).
        memory_bytes: Budget for the stacked weights of one block.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Linear(2, 3)
        >>> x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
        >>> d = {"bias": torch.ones(3)}
        >>> ev = SurfaceEvaluator(model, nn.functional.cross_entropy, [d])
        >>> values = ev.evaluate([(x, y)], np.array([[0.0], [2.0]]))
        >>> loss = nn.functional.cross_entropy(model(x), y).item()
        >>> [round(abs(float(v) - loss), 6) for v in values.loss]  # every logit + 2: same loss
        [0.0, 0.0]
    """

    @in_analysis_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        directions: Sequence[Mapping[str, Tensor]],
        vectorize: str = "auto",
        memory_bytes: int = 256 * 2**20,
    ) -> None:
        if vectorize not in VECTORIZE:
            raise LandscapeInputError(
                f"vectorize {vectorize!r}: choose one of {', '.join(VECTORIZE)}"
            )
        if not 1 <= len(directions) <= 2:
            raise LandscapeInputError(f"need one or two directions, got {len(directions)}")
        self.model = model
        self.loss_fn = loss_fn
        self.base = _base_tensors(model, directions)
        self.directions = _complete_directions(directions, self.base)
        self.slots = TensorSlots(model, self.base)
        self.memory_bytes = memory_bytes
        if vectorize == "auto" and has_convolutions(model):
            vectorize = "never"
        self.vectorize = vectorize
        self.timings: dict[str, float] = {}
        first = next(iter(self.base.values()))
        self.device, self.dtype = first.device, first.dtype

    @property
    def max_block(self) -> int:
        """Most points whose stacked weights fit the memory budget."""
        per_point = sum(t.numel() * t.element_size() for t in self.base.values())
        return max(1, self.memory_bytes // max(per_point, 1))

    def stacked_weights(self, coords: Tensor) -> dict[str, Tensor]:
        r"""Weights at each point: ``(G, *shape)`` tensors :math:`\theta + a_g d_x + b_g d_y`."""
        stacked = {}
        for name, theta in self.base.items():
            view = (-1,) + (1,) * theta.dim()
            w = theta.unsqueeze(0)
            for axis, direction in enumerate(self.directions):
                coef = coords[:, axis].to(theta.dtype).reshape(view)
                w = w + coef * direction[name].unsqueeze(0)
            stacked[name] = w
        return stacked

    def evaluate(self, batches: Iterable[Batch], coords: np.ndarray) -> PointValues:
        """Mean loss and accuracy at each row of ``coords`` (shape ``(k, len(directions))``).

        All ``k`` points form one block: the data is read once. Split long lists of points
        into blocks of at most :attr:`max_block` (``compute_surface`` does).
        """
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, len(self.directions))
        if iter(batches) is batches:
            raise LandscapeInputError(
                "batches: give a list or a DataLoader (read once per block), not an iterator"
            )
        k = coords.shape[0]
        block = _Block(self.stacked_weights(torch.from_numpy(coords).to(self.device)), k)
        loss_terms: list[Tensor] = []
        hit_terms: list[Tensor] = []
        sizes: list[int] = []
        counted: list[int] = []
        labels = True
        with torch.inference_mode(), analysis_mode(self.model), self.slots.substituted():
            for batch in batches:
                inputs, targets = move_batch(batch, self.device, self.dtype)
                losses, hits = self._batch(block, inputs, targets)
                loss_terms.append(losses)
                sizes.append(int(targets.shape[0]))
                counted.append(batch_weight(self.loss_fn, (inputs, targets)))
                if hits is None:
                    labels = False
                else:
                    hit_terms.append(hits)
        total = sum(sizes)
        if total == 0:
            raise LandscapeInputError("batches: no examples to evaluate the surface on")
        if sum(counted) == 0:
            raise LandscapeInputError("batches: the loss counts no token (every label is -100)")
        weights = torch.tensor(counted, dtype=torch.float64)
        loss = (torch.stack(loss_terms).double().cpu() * weights[:, None]).sum(0) / sum(counted)
        if labels:
            acc = 100.0 * torch.stack(hit_terms).double().cpu().sum(0) / total
        else:
            acc = torch.full((k,), float("nan"), dtype=torch.float64)
        return PointValues(loss.numpy(), acc.numpy())

    def _batch(self, block: _Block, inputs: Any, targets: Tensor) -> tuple[Tensor, Tensor | None]:
        """Per-point mean loss ``(k,)`` and hits ``(k,)`` of one batch."""
        if self.vectorize == "auto":
            return self._choose(block, inputs, targets)
        if self.vectorize == "always":
            return self._vectorized(block, inputs, targets)
        return self._looped(block, inputs, targets)

    def _looped(self, block: _Block, inputs: Any, targets: Tensor) -> tuple[Tensor, Tensor | None]:
        """One plain forward pass per point, the model's slots pointed at its weights."""
        losses, hits = [], []
        for assignments in block.assignments(self.slots):
            self.slots.fill(assignments)
            outputs = model_outputs(call_model(self.model, inputs))
            losses.append(self.loss_fn(outputs, targets))
            hits.append(correct_count(outputs, targets))
        return torch.stack(losses), None if hits[0] is None else torch.stack(hits)

    def _vectorized(
        self, block: _Block, inputs: Any, targets: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """``vmap`` over the points, :data:`VMAP_WIDTH` at a time."""

        def one_point(weights: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            outputs = model_outputs(call_model(self.model, inputs, weights))
            return self.loss_fn(outputs, targets), outputs

        batched = vmap(one_point)
        losses, hits = [], []
        for start in range(0, block.size, VMAP_WIDTH):
            chunk = {n: w[start : start + VMAP_WIDTH] for n, w in block.stacked.items()}
            loss, outputs = batched(chunk)
            losses.append(loss)
            hits.append(correct_count(outputs, targets))
        return torch.cat(losses), None if hits[0] is None else torch.cat(hits)

    def _choose(self, block: _Block, inputs: Any, targets: Tensor) -> tuple[Tensor, Tensor | None]:
        """Time the loop and ``vmap`` on this batch, keep the faster for the rest of the run.

        Batches above :data:`VMAP_MAX_BATCH` examples take the loop without a trial. Both
        ways are first warmed up on two points (first calls pay one-off costs). Only blocks
        of at least two points can tell; ``vmap`` must win by 10 % of CPU time (the loop is
        the plainer computation).
        """
        if block.size < 2:
            return self._looped(block, inputs, targets)
        if targets.shape[0] > VMAP_MAX_BATCH:
            self.vectorize = "never"
            return self._looped(block, inputs, targets)
        pair = block.head(2)
        self._looped(pair, inputs, targets)
        try:
            self._vectorized(pair, inputs, targets)
        except RuntimeError:  # an operation vmap does not support
            self.vectorize = "never"
            return self._looped(block, inputs, targets)
        clock = clock_for(self.device)
        start = clock()
        result = self._looped(block, inputs, targets)
        self.timings["never"] = clock() - start
        start = clock()
        self._vectorized(block, inputs, targets)
        self.timings["always"] = clock() - start
        faster = self.timings["always"] * 1.1 < self.timings["never"]
        self.vectorize = "always" if faster else "never"
        return result


class _Block:
    """The stacked weights of a block of points, and (made once) their slot assignments."""

    def __init__(self, stacked: dict[str, Tensor], size: int) -> None:
        self.stacked = stacked
        self.size = size
        self._assignments: list | None = None

    def assignments(self, slots: TensorSlots) -> list:
        if self._assignments is None:
            self._assignments = [
                slots.assignments({n: w[g] for n, w in self.stacked.items()})
                for g in range(self.size)
            ]
        return self._assignments

    def head(self, count: int) -> _Block:
        return _Block({n: w[:count] for n, w in self.stacked.items()}, count)


def evaluate_points(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    directions: Sequence[Mapping[str, Tensor]],
    coords: np.ndarray,
    vectorize: str = "auto",
) -> PointValues:
    """Mean loss and accuracy at ``theta + sum_i coords[:, i] * directions[i]``, one block."""
    return SurfaceEvaluator(model, loss_fn, directions, vectorize).evaluate(batches, coords)


def plan_blocks(
    pending: np.ndarray,
    first: int,
    seconds_per_point: float | None,
    target_seconds: float,
    cap: int,
) -> np.ndarray:
    """The next block of pending flat indices.

    The first block is small (quick feedback and a timing); later blocks hold as many
    points as take about ``target_seconds`` (a flush to disk at least that often), at most
    ``cap``.
    """
    if seconds_per_point is None:
        size = first
    else:
        size = int(target_seconds / max(seconds_per_point, 1e-9))
    return pending[: max(1, min(size, cap))]


def compute_surface(
    evaluator: SurfaceEvaluator,
    data: Mapping[str, Iterable[Batch]],
    coords: np.ndarray,
    pending: np.ndarray,
    write: Callable[[np.ndarray, dict[str, PointValues]], None],
    progress: Callable[[int], None] | None = None,
    target_seconds: float = 5.0,
    max_block: int = 256,
) -> None:
    """Evaluate the ``pending`` points block by block and hand each finished block to ``write``.

    Args:
        evaluator: The model, loss and directions.
        data: Batches per split, e.g. ``{"train": [...], "test": [...]}``.
        coords: All points' coordinates, ``(n, ndir)`` (see :func:`grid_points`).
        pending: Flat indices still to compute (any subset: resuming or one rank's share).
        write: Called as ``write(indices, {split: PointValues})`` after every block, e.g.
            ``SurfaceStore.write``; a point is final once written.
        progress: Called with the number of points just finished.
        target_seconds: Rough time between two writes.
        max_block: Most points per block (also bounded by the evaluator's memory budget).
    """
    pending = np.asarray(pending, dtype=np.int64)
    cap = min(max_block, evaluator.max_block)
    seconds_per_point = None
    while pending.size:
        block = plan_blocks(pending, min(8, cap), seconds_per_point, target_seconds, cap)
        start = time.perf_counter()
        values = {
            split: evaluator.evaluate(batches, coords[block]) for split, batches in data.items()
        }
        seconds_per_point = (time.perf_counter() - start) / block.size
        write(block, values)
        if progress is not None:
            progress(int(block.size))
        pending = pending[block.size :]


def _base_tensors(model: nn.Module, directions: Sequence[Mapping[str, Tensor]]) -> Direction:
    """The model's tensors for every name some direction moves."""
    own = {n: p.detach() for n, p in model.named_parameters()}
    own.update({n: b.detach() for n, b in model.named_buffers()})
    names: list[str] = []
    for direction in directions:
        names += [n for n in direction if n not in names]
    unknown = [n for n in names if n not in own]
    if unknown:
        raise LandscapeInputError(
            f"direction entry {unknown[0]!r} is not a parameter or buffer of the model"
        )
    for direction in directions:
        for name, tensor in direction.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise LandscapeInputError(
                    f"direction entry {name!r} has shape {tuple(tensor.shape)}, "
                    f"the model's {tuple(own[name].shape)}"
                )
    return {n: own[n] for n in names}


def _complete_directions(
    directions: Sequence[Mapping[str, Tensor]], base: Direction
) -> list[Direction]:
    """Every direction over every moved name (zeros where absent), on the weights' device."""
    return [
        {
            name: direction[name].to(device=w.device, dtype=w.dtype)
            if name in direction
            else torch.zeros_like(w)
            for name, w in base.items()
        }
        for direction in directions
    ]
