"""How the examples of a measurement are cut into batches, and how fast each size runs.

Throughput on a CPU depends on whether a batch's activations fit the caches, so neither
"as large as fits" nor a fixed 128 is right: on the MNIST-1D CNN one 4000-example batch
took twice as long per point as batches of 128, and a ResNet-20 HVP over 1024 examples
twice as long in one batch as in batches of 256. Curvature therefore uses cache-sized
batches with every gradient graph kept (:func:`curvature_batches`); surfaces measure the
fastest forward batch size (:func:`landscape.surface.forward_cost.fastest_batch_size`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from landscape._types import Batch
from landscape.errors import LandscapeInputError


def _take(inputs: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of inputs that are a tensor or a dict/list/tuple of tensors."""
    if isinstance(inputs, Mapping):
        return {key: _take(value, start, stop) for key, value in inputs.items()}
    if isinstance(inputs, list | tuple):
        return type(inputs)(_take(value, start, stop) for value in inputs)
    return inputs[start:stop]


def index_examples(inputs: Any, index: slice | Tensor) -> Any:
    """The examples ``index`` picks (a slice or index tensor) of inputs of any nesting.

    Example:
        >>> index_examples({"ids": torch.arange(4)}, torch.tensor([3, 0]))
        {'ids': tensor([3, 0])}
    """
    if isinstance(inputs, Mapping):
        return {key: index_examples(value, index) for key, value in inputs.items()}
    if isinstance(inputs, list | tuple):
        return type(inputs)(index_examples(value, index) for value in inputs)
    return inputs[index]


def _concat(parts: Sequence[Any]) -> Any:
    """Concatenate the inputs of several batches along the example axis."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {key: _concat([p[key] for p in parts]) for key in first}
    if isinstance(first, list | tuple):
        return type(first)(_concat(list(column)) for column in zip(*parts, strict=True))
    if not isinstance(first, Tensor):
        raise LandscapeInputError(
            f"batches: inputs of type {type(first).__name__} cannot be joined; give tensors, "
            "or dicts/lists of tensors with the examples on the first axis"
        )
    return torch.cat(list(parts))


def split_batches(inputs: Any, targets: Tensor, size: int) -> list[Batch]:
    """Consecutive ``(inputs, targets)`` batches of ``size`` examples (the last may be short).

    Example:
        >>> [len(y) for _, y in split_batches(torch.zeros(5, 2), torch.arange(5), 2)]
        [2, 2, 1]
    """
    if size < 1:
        raise LandscapeInputError(f"batch_size {size}: must be >= 1")
    n = int(targets.shape[0])
    return [(_take(inputs, i, i + size), targets[i : i + size]) for i in range(0, n, size)]


def gather_examples(data: Iterable[Batch], samples: int | None = None) -> tuple[Any, Tensor]:
    """The first ``samples`` examples (all when None) of a DataLoader or list of batches.

    Reads only as many batches as it needs, in order; the inputs of several batches are
    joined along the first axis.

    Raises:
        LandscapeInputError: no examples, or ``samples < 1``.
    """
    if samples is not None and samples < 1:
        raise LandscapeInputError(f"samples {samples}: must be >= 1")
    inputs, targets, count = [], [], 0
    for x, y in data:
        inputs.append(x)
        targets.append(y)
        count += int(y.shape[0])
        if samples is not None and count >= samples:
            break
    if count == 0:
        raise LandscapeInputError("data: need at least one non-empty (inputs, targets) batch")
    stop = count if samples is None else min(samples, count)
    joined = _concat(inputs) if len(inputs) > 1 else inputs[0]
    return _take(joined, 0, stop), torch.cat(targets)[:stop]


PRODUCT_BATCH = 256


def product_batches(inputs: Any, targets: Tensor) -> list[Batch]:
    """Batches for curvature products whose gradient graphs are all kept.

    On a CPU, :data:`PRODUCT_BATCH` examples each: there one large batch runs slower per
    example than a cache-sized one (an HVP over 1024 examples of a ResNet-20 took about
    twice as long in one batch as in batches of 256, docs/benchmarks.md), and with every
    graph kept (``keep_graphs=True``) the memory is that of one batch. On other devices
    (a GPU, which wants large batches) one batch.
    """
    if targets.device.type != "cpu":
        return [(inputs, targets)]
    return split_batches(inputs, targets, PRODUCT_BATCH)


def curvature_batches(
    inputs: Any, targets: Tensor, batch_size: int | None = None
) -> tuple[list[Batch], bool]:
    """The batches a curvature measurement runs on, and whether to keep their graphs.

    The policy of ``flatscape hessian`` and of :func:`landscape.model_curvature`: by
    default :func:`product_batches` with every graph kept (fastest); with ``batch_size``,
    batches of that size whose graphs are rebuilt for every product (bounded memory).

    Returns:
        ``(batches, keep_graphs)``.
    """
    if batch_size is None:
        return product_batches(inputs, targets), True
    return split_batches(inputs, targets, batch_size), False
