"""A budget on the memory torch's factory functions allocate while some code runs.

Used where a model must be built from sizes nobody checked and the ``meta`` device cannot
be used (:func:`distill.checkpoint.load_checkpoint`, for user code that fails on meta):
every tensor created from a size (``empty``, ``zeros``, ``randn``, ...) is counted
before it is allocated, and the one that would pass the budget is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class AllocationRefused(BaseException):
    """A tensor creation that would pass the budget; the message says which.

    A ``BaseException``, like ``KeyboardInterrupt``, so that the code being run (a user's
    constructor, its ``except Exception``) cannot swallow it.
    """


class _Budget(TorchDispatchMode):
    """Counts the bytes of every tensor created from a size, refusing past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.used = limit, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        arguments = func._schema.arguments
        if args and arguments and arguments[0].name == "size":
            try:
                count = math.prod(int(d) for d in args[0])
            except TypeError:  # a size torch itself will refuse
                count = 0
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            self.used += count * torch.empty((), dtype=dtype, device="meta").element_size()
            if self.used > self.limit:
                raise AllocationRefused(f"{func} of shape {list(args[0])}")
        return func(*args, **kwargs)


@contextmanager
def allocation_budget(limit: int) -> Iterator[None]:
    """Refuse, with :class:`AllocationRefused`, tensors created past ``limit`` bytes in all."""
    with _Budget(limit):
        yield
