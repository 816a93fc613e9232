"""What a process knows of its torchrun job before importing torch: variables and the error.

Kept free of heavy imports so that the command line can decide, before loading torch,
whether it runs under torchrun and which rank prints.
"""

from __future__ import annotations

import os

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT_VARIABLE = "FLATSCAPE_DIST_TIMEOUT"
"""Seconds a collective may wait for the slowest process (default 1800, torch's own)."""


def launched_by_torchrun() -> bool:
    """Whether the environment names this process's place in a torchrun job."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def env_rank() -> int:
    """The rank torchrun gave this process (0 without torchrun), readable before any group."""
    return int(os.environ.get("RANK", "0"))


class DistributedRunError(RuntimeError):
    """A process of a distributed run failed or was stopped; every finished point is saved.

    Attributes:
        failed_rank: The rank that failed, None when it is not known.
        orderly: Every process is still alive and knows of the failure (a final barrier
            is safe).
        exit_code: The exit code the command should end with.
    """

    def __init__(
        self, message: str, failed_rank: int | None, orderly: bool, exit_code: int = 1
    ) -> None:
        super().__init__(message)
        self.failed_rank = failed_rank
        self.orderly = orderly
        self.exit_code = exit_code
