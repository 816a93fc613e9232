"""The result both trace estimators return, and their random probes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TraceResult:
    r"""A trace estimate with its standard error and cost.

    Attributes:
        estimate: The estimate of :math:`\\operatorname{tr}(A)`.
        stderr: Its standard error, from the spread of the random part's samples
            (zero where nothing random is left, e.g. Hutch++ on a low-rank matrix).
        matvecs: Operator products spent.
        method: ``"hutchinson"``, ``"hutchpp"`` or ``"pyhessian"``.
    """

    estimate: float
    stderr: float
    matvecs: int
    method: str


def rademacher(
    dim: int, count: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """``count`` Rademacher vectors (entries +-1 with probability 1/2) as columns."""
    signs = torch.randint(0, 2, (dim, count), generator=generator, dtype=torch.int8)
    return (2 * signs - 1).to(device=device, dtype=dtype)
