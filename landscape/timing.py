"""Clocks for choosing between two ways of computing the same thing.

On a CPU the process's own CPU time is the fair measure: other processes on a shared
machine stretch wall time but not it (with one torch thread it is the work done). On a GPU
the work happens elsewhere, so it is wall time after a synchronisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def clock_for(device: torch.device) -> Callable[[], float]:
    """A function returning seconds for timing work on ``device``.

    CPU time of this process on a CPU, synchronised wall time on CUDA.
    """
    if device.type == "cuda":

        def synchronized() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return synchronized
    return time.process_time
