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

import torch

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


def format_size(size: float) -> str:
    """``"742 MiB"``, ``"3.0 GiB"``, ``"600 KiB"``: binary units, as parse_size reads them."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if unit == "GiB" else f"{size / scale:.0f} {unit}"
    return f"{size:.0f} B"
