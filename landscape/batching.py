"""The batch size at which a model's no-grad forward pass is fastest, measured.

Throughput on a CPU depends on whether a batch's activations fit the caches, so neither
"as large as fits" nor a fixed 128 is right: on the MNIST-1D CNN one 4000-example batch
took twice as long per point as batches of 128. The surface code measures instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from landscape.timing import clock_for

CANDIDATES = (64, 128, 256, 512, 1024, 2048, 4096)


def split_batches(inputs: Tensor, targets: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    """Consecutive ``(inputs, targets)`` batches of ``size`` examples (the last may be short)."""
    return list(zip(inputs.split(size), targets.split(size), strict=True))


PRODUCT_BATCH = 256


def product_batches(inputs: Tensor, targets: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Batches for Hessian-vector products whose gradient graphs are all kept.

    On a CPU, :data:`PRODUCT_BATCH` examples each: there one large batch runs slower per
    example than a cache-sized one (an HVP over 1024 examples of a ResNet-20 took about
    twice as long in one batch as in batches of 256, docs/benchmarks.md), and with every
    graph kept (``HessianOperator(keep_graphs=True)``) the memory is that of one batch. On
    other devices (a GPU, which wants large batches) one batch.
    """
    if inputs.device.type != "cpu":
        return [(inputs, targets)]
    return split_batches(inputs, targets, PRODUCT_BATCH)


def fastest_batch_size(
    model: nn.Module,
    inputs: Tensor,
    candidates: Sequence[int] = CANDIDATES,
    max_examples: int = 4096,
    repeats: int = 2,
) -> tuple[int, dict[int, float]]:
    """Time one no-grad forward pass per candidate batch size, return the fastest.

    Args:
        model: The model, evaluated in its current mode.
        inputs: Examples (at most ``max_examples`` of them are used).
        candidates: Batch sizes to try; those above the number of examples collapse to it.
        repeats: Passes per candidate; the fastest counts. Timed with
            :func:`landscape.timing.clock_for` (CPU time on a CPU).

    Returns:
        The fastest batch size and the seconds per example of every candidate tried.
    """
    sample = inputs[:max_examples]
    n = sample.shape[0]
    sizes = sorted({min(size, n) for size in candidates})
    seconds: dict[int, float] = {}
    with torch.inference_mode():
        model(sample[: sizes[0]])  # warm-up
        for size in sizes:
            seconds[size] = min(_pass_seconds(model, sample, size) for _ in range(repeats)) / n
    return min(seconds, key=seconds.get), seconds


def _pass_seconds(model: nn.Module, inputs: Tensor, size: int) -> float:
    clock = clock_for(inputs.device)
    start = clock()
    for chunk in inputs.split(size):
        model(chunk)
    return clock() - start
