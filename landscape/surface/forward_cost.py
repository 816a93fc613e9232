"""What a no-grad forward pass costs: its working memory per example, the fastest batch size.

Surfaces are forward passes at many grid points, so they plan their batches and point
blocks from these (:mod:`landscape.surface.loss_surface`); curvature products are planned
by :class:`landscape.operators.memory.GraphBudget` instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from landscape.timing import clock_for

CANDIDATES = (64, 128, 256, 512, 1024, 2048, 4096)
"""Batch sizes :func:`fastest_batch_size` tries."""


class LiveBytes(TorchDispatchMode):
    """The most bytes of new tensors alive at once inside the ``with`` block (:attr:`peak`).

    Every tensor an operator returns counts until its last reference in the block dies
    (storages shared by views count once); tensors made before the block (the weights,
    the inputs) do not. For a no-grad forward pass this is its working memory, on any
    device, measured without the allocator's caching in the way.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [bytes, live tensors]

    def _release(self, pointer: int) -> None:
        entry = self._storages.get(pointer)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[pointer]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                storage = tensor.untyped_storage()
                pointer = storage.data_ptr()
                entry = self._storages.get(pointer)
                if entry is None:
                    entry = self._storages[pointer] = [storage.nbytes(), 0]
                    self.live += entry[0]
                    self.peak = max(self.peak, self.live)
                entry[1] += 1
                weakref.finalize(tensor, self._release, pointer)
        return out


MODULE_OUTPUT_SAFETY = 2.0
"""Factor on the peak of live module outputs for the cheap estimate of a forward pass
(tensors made by functional calls inside a ``forward``, a residual sum say, are not
module outputs)."""


def forward_bytes(
    model: torch.nn.Module, inputs: Tensor, examples: int = 64, exact: bool = True
) -> float:
    """Working memory of a no-grad forward pass per example, measured on ``examples``.

    ``exact`` counts every tensor alive at once (:class:`LiveBytes`; its first use costs
    about 1.5 s in torch 2.13, which imports ``torch._dynamo`` for any dispatch mode).
    Otherwise the peak of live *module outputs*, times :data:`MODULE_OUTPUT_SAFETY`, from
    forward hooks (no start-up cost): an estimate, used where the budget is far away.
    Measured in inference mode (the model's train/eval mode is left as it is); the
    per-batch constant part is included, so it errs high for larger batches.
    """
    sample = inputs[:examples]
    if exact:
        with torch.inference_mode(), LiveBytes() as live:
            model(sample)
        return live.peak / max(int(sample.shape[0]), 1)
    state = {"live": 0, "peak": 0}
    storages: dict[int, list[int]] = {}

    def release(pointer: int) -> None:
        entry = storages.get(pointer)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                state["live"] -= entry[0]
                del storages[pointer]

    def hook(module, args, output) -> None:  # noqa: ANN001
        for tensor in tree_leaves(output):
            if isinstance(tensor, Tensor):
                pointer = tensor.untyped_storage().data_ptr()
                entry = storages.get(pointer)
                if entry is None:
                    entry = storages[pointer] = [tensor.untyped_storage().nbytes(), 0]
                    state["live"] += entry[0]
                    state["peak"] = max(state["peak"], state["live"])
                entry[1] += 1
                weakref.finalize(tensor, release, pointer)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return MODULE_OUTPUT_SAFETY * state["peak"] / max(int(sample.shape[0]), 1)


def fastest_batch_size(
    model: nn.Module,
    inputs: Tensor,
    candidates: Sequence[int] = CANDIDATES,
    max_examples: int = 4096,
    repeats: int = 3,
) -> tuple[int, dict[int, float]]:
    """Time no-grad forward passes per candidate batch size, return the fastest.

    Every candidate is first run once untimed (its first pass pays for new allocations),
    then the candidates are timed in ``repeats`` interleaved rounds and each keeps its
    fastest round: a burst of load on a shared machine then hits one round of every
    candidate, not every round of one (one pass each, in one round, picked 128 over 2048
    on a loaded machine, 1.4x slower per pass).

    Args:
        model: The model, evaluated in its current mode.
        inputs: Examples (at most ``max_examples`` of them are used).
        max_examples: How many examples each candidate is timed on.
        candidates: Batch sizes to try; those above the number of examples collapse to it.
        repeats: Timed rounds; the fastest of each candidate counts. Timed with
            :func:`landscape.timing.clock_for` (CPU time on a CPU).

    Returns:
        The fastest batch size and the seconds per example of every candidate tried.
    """
    sample = inputs[:max_examples]
    n = sample.shape[0]
    sizes = sorted({min(size, n) for size in candidates})
    seconds: dict[int, float] = {}
    with torch.inference_mode():
        for size in sizes:  # warm-up
            model(sample[:size])
        for _ in range(repeats):
            for size in sizes:
                elapsed = _pass_seconds(model, sample, size) / n
                seconds[size] = min(seconds.get(size, elapsed), elapsed)
    return min(seconds, key=seconds.get), seconds


def _pass_seconds(model: nn.Module, inputs: Tensor, size: int) -> float:
    clock = clock_for(inputs.device)
    start = clock()
    for chunk in inputs.split(size):
        model(chunk)
    return clock() - start
