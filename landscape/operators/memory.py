"""Memory as a planned resource: the budget for kept gradient graphs, and the peak used.

A Hessian operator that keeps every batch's gradient graph is fastest and holds memory
linear in the examples (resnet20: about 3 MiB per example in float32). The budget says how
much of it may stay; :class:`~landscape.operators.hessian.HessianOperator` measures the
graph of each batch as it builds it and rebuilds the rest per product.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from landscape.errors import LandscapeInputError

DEFAULT_FRACTION = 0.5
"""Of the memory available when the measurement starts (RAM, or the GPU's free memory)."""

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes from ``"3GB"``, ``"500M"``, ``"1.5GiB"``, ``"2048"`` (binary units).

    Raises:
        LandscapeInputError: anything else, or a size that is not positive.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if not match:
        raise LandscapeInputError(f"memory size {text!r}: write e.g. 3GB, 500MB or 2048")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise LandscapeInputError(f"memory size {text!r}: must be positive")
    return size


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors: the GPU's free memory, or Linux's MemAvailable.

    None where neither can be read (then no budget applies by default).
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 2**10
    except OSError:
        return None
    return None


def default_budget(device: torch.device) -> int | None:
    """:data:`DEFAULT_FRACTION` of :func:`available_bytes`, or None if unknown.

    On a CPU under torchrun the machine's memory is shared by its processes
    (``LOCAL_WORLD_SIZE``), so each gets its share; each GPU process has its own device.
    """
    available = available_bytes(device)
    if available is None:
        return None
    sharing = 1 if device.type == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return int(DEFAULT_FRACTION * available / max(sharing, 1))


def resident_bytes(device: torch.device) -> int:
    """Memory this process holds now: resident set (Linux), or allocated on the GPU.

    0 where it cannot be read.
    """
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_bytes(device: torch.device) -> int:
    """The process's peak resident memory (CPU), or the peak allocated on the GPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 2**10)


def resolve_budget(max_memory: int | str | None, device: torch.device) -> int | None:
    """The bytes graphs may hold, from a ``max_memory`` argument.

    ``"auto"`` is :func:`default_budget`; None is no limit; a byte count is for the whole
    process, so what it already holds (model, data, libraries) is taken off.

    Raises:
        LandscapeInputError: anything else, or a size the process already exceeds.
    """
    if max_memory == "auto":
        return default_budget(device)
    if max_memory is None:
        return None
    if not isinstance(max_memory, int) or max_memory <= 0:
        raise LandscapeInputError(f"max_memory {max_memory!r}: 'auto', None or bytes > 0")
    held = resident_bytes(device)
    if held >= max_memory:
        raise LandscapeInputError(
            f"max_memory {format_size(max_memory)}: this process already holds "
            f"{format_size(held)} (model, data, libraries) before any graph"
        )
    return MemoryBudget(max_memory, held)


class MemoryBudget(int):
    """The bytes left for graphs, remembering the process-wide size given and what was held.

    An ``int`` (``given - held``) wherever a byte count goes; errors quote ``given``, the
    number the user wrote, beside ``held``.
    """

    given: int
    held: int

    def __new__(cls, given: int, held: int) -> MemoryBudget:
        """``given - held`` bytes, remembering both."""
        budget = super().__new__(cls, given - held)
        budget.given, budget.held = given, held
        return budget


def describe_budget(budget: int) -> str:
    """``"330 MiB (322 MiB held by the model, data and libraries, 8 MiB left)"``, or the size."""
    if not isinstance(budget, MemoryBudget) or not budget.held:
        return format_size(budget)
    return (
        f"{format_size(budget.given)} ({format_size(budget.held)} held by the model, data and "
        f"libraries, {format_size(budget)} left)"
    )


def format_size(size: float) -> str:
    """``"742 MiB"``, ``"3.0 GiB"``, ``"600 KiB"``: binary units, as parse_size reads them."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if unit == "GiB" else f"{size / scale:.0f} {unit}"
    return f"{size:.0f} B"


class SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Counts the bytes of the tensors autograd saves inside the ``with`` block.

    Each storage counts once; the parameters' own storages (saved by every layer, but no
    new memory) do not count. What a kept gradient graph holds, on any device.
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.bytes = 0
        self._seen = {p.untyped_storage().data_ptr() for p in params}

        def pack(tensor: Tensor) -> Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in self._seen:
                self._seen.add(storage.data_ptr())
                self.bytes += storage.nbytes()
            return tensor

        super().__init__(pack, lambda tensor: tensor)

    def __enter__(self) -> SavedBytes:
        super().__enter__()
        return self


class GraphBudget:
    """Which batches may keep their graphs within ``limit`` bytes (an operator's graph_budget).

    Graphs are admitted in batch order while the kept bytes, the next graph and a
    product's working memory (``reserve`` graphs of the largest batch, at the largest
    bytes per example measured so far) stay within the budget; the others are rebuilt
    at every use. Without a budget (None) every graph is kept.

    Args:
        limit: Bytes, or None for no limit (a :class:`MemoryBudget` when it comes from a
            process-wide ``max_memory``: errors then quote the user's number).
        largest: Examples in the largest batch.
        reserve: Working memory of one use beside the kept graphs, in graphs of the
            largest batch (measured per operator by ``bench/memory.py``).
        what: What a graph is, for the error message ("gradient graph").
        small_graph: Measures the graph of a few examples: ``(examples, bytes)``; called
            only to say in the error which batch size would fit, since a graph's fixed
            part (e.g. weight-shaped tensors) makes small batches cost more per example.
    """

    def __init__(
        self,
        limit: int | None,
        largest: int,
        reserve: float,
        what: str,
        small_graph: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        if limit is not None and limit <= 0:
            raise LandscapeInputError(f"graph_budget {limit}: must be a positive byte count")
        self.limit, self.largest, self.reserve, self.what = limit, largest, reserve, what
        self.small_graph = small_graph
        self.per_example = 0.0
        """The largest graph bytes per example measured so far."""
        self.kept_bytes = 0
        """Bytes the kept graphs hold (their saved tensors, parameters excluded)."""
        self.kept_examples = 0
        """Examples whose graphs are kept."""

    def room_for(self, examples: int) -> bool:
        """Whether a graph of ``examples``, at the bytes per example seen so far, fits."""
        return self._fits(self.per_example * examples)

    def admit(self, saved_bytes: int, examples: int) -> bool:
        """Record a measured graph; whether it may be kept (else the caller frees it).

        Raises:
            LandscapeInputError: the budget cannot hold even one use of the largest batch,
                with its graph rebuilt (the numbers, and the batch size that would fit).
        """
        self.per_example = max(self.per_example, saved_bytes / max(examples, 1))
        keep = self._fits(saved_bytes)
        if keep:
            self.kept_bytes += saved_bytes
            self.kept_examples += examples
        self.check()
        return keep

    def measure(self, examples: int, saved_bytes: int) -> None:
        """Record a graph that is not kept (one batch at a time), then :meth:`check`."""
        self.per_example = max(self.per_example, saved_bytes / max(examples, 1))
        self.check()

    def check(self) -> None:
        """Raise if one use of the largest batch does not fit beside the kept graphs."""
        if self.limit is None or self._fits(0, kept=0):
            return
        fitting = self._fitting()
        hint = f", or pass a batch size of at most {fitting}" if fitting else ""
        needed = self.reserve * self.per_example * self.largest
        needed += getattr(self.limit, "held", 0)  # as the user counts: the whole process
        name = "max_memory" if isinstance(self.limit, MemoryBudget) else "graph_budget"
        raise LandscapeInputError(
            f"{name} {describe_budget(self.limit)}: one batch of {self.largest} "
            f"examples holds {format_size(self.largest * self.per_example)} of {self.what} "
            f"({format_size(self.per_example)} per example) and using it takes "
            f"{self.reserve:g} times that, even rebuilt at every use; raise {name} to "
            f"at least {format_size(needed)}{hint}"
        )

    def _fitting(self) -> int:
        """The largest batch whose use fits, from a graph linear in the examples."""
        total = self.per_example * self.largest
        n, small = self.small_graph() if self.small_graph is not None else (0, 0.0)
        slope = (total - small) / (self.largest - n) if self.largest > n else self.per_example
        fixed = max(small - slope * n, 0.0)
        if slope <= 0:
            return 0
        return max(int((self.limit / self.reserve - fixed) // slope), 0)

    def _fits(self, more_bytes: float, kept: float | None = None) -> bool:
        kept = self.kept_bytes if kept is None else kept
        needed = kept + more_bytes + self.reserve * self.per_example * self.largest
        return self.limit is None or needed <= self.limit

    def to_dict(self) -> dict[str, int | None]:
        """``{"budget", "graph_bytes", "kept_examples"}`` for a report."""
        return {
            "budget": self.limit,
            "graph_bytes": self.kept_bytes,
            "kept_examples": self.kept_examples,
        }
