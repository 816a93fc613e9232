"""What every wing of :mod:`landscape` shares: batches, losses, the analysis mode, moving data.

A *batch* is a pair ``(inputs, targets)``: ``inputs`` is whatever the model's ``forward``
takes as its one argument (a tensor, or a dict/list/tuple of tensors), ``targets`` a tensor
whose first axis counts the examples. A *loss function* maps ``(outputs, targets)`` to the
*mean* loss of the batch, as ``torch.nn.functional.cross_entropy`` does; batches are then
weighted by their size, so every number is that of the mean over all examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeInputError

Batch = tuple[Any, Tensor]
LossFunction = Callable[[Any, Tensor], Tensor]

BN_MODES = ("eval", "train")


def check_bn_mode(bn_mode: str) -> str:
    """Return ``bn_mode`` when it is ``"eval"`` or ``"train"``; raise the user error otherwise."""
    if bn_mode not in BN_MODES:
        raise LandscapeInputError(f"bn_mode {bn_mode!r}: choose one of {', '.join(BN_MODES)}")
    return bn_mode


@contextmanager
def analysis_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """Put the model in eval mode (BatchNorm layers in train mode if asked), then restore.

    Every module's own ``training`` flag is given back when the block ends, also on an
    exception, so a model that mixes modes comes out as it went in.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> with analysis_mode(model, "train"):
        ...     [m.training for m in model]
        [False, True]
        >>> [m.training for m in model]
        [True, True]
    """
    saved = [(module, module.training) for module in model.modules()]
    model.eval()
    if bn_mode == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


def move_to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``value`` on ``device``, floating tensors in ``dtype``; dicts, lists, tuples recursively.

    Integer tensors (class labels, token ids) keep their dtype; anything else is returned
    as it is.

    Example:
        >>> moved = move_to({"x": torch.ones(2), "ids": torch.ones(2, dtype=torch.long)},
        ...                 torch.device("cpu"), torch.float64)
        >>> moved["x"].dtype, moved["ids"].dtype
        (torch.float64, torch.int64)
    """
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
    if isinstance(value, Mapping):
        return {key: move_to(item, device, dtype) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(move_to(item, device, dtype) for item in value)
    return value


def move_batch(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """An ``(inputs, targets)`` batch moved with :func:`move_to`."""
    inputs, targets = batch
    return move_to(inputs, device, dtype), move_to(targets, device, dtype)


def batch_size(batch: Batch) -> int:
    """Number of examples in ``(inputs, targets)``, read from the targets' first axis."""
    return int(batch[1].shape[0])


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """Weights :math:`n_k / N` that turn per-batch mean losses into the overall mean.

    Raises:
        LandscapeInputError: no batch, or an empty one.
    """
    sizes = [batch_size(b) for b in batches]
    if not sizes or min(sizes) < 1:
        raise LandscapeInputError("batches: need at least one non-empty (inputs, targets) batch")
    total = sum(sizes)
    return [n / total for n in sizes]
