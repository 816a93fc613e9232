"""Warm starts: the vectors an eigensolver begins from, checked before any product.

A measurement repeated on a slowly changing operator (a training run, the next point of a
grid, the same model at another temperature) starts best from the previous Ritz vectors
(:attr:`~landscape.curvature.eigen.result.EigenResult.eigenvectors`). A start changes how
many products are spent, never what is certified: the solvers stop on the same residual
rule whatever they start from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.errors import LandscapeInputError


def start_block(start: Tensor, dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``start`` as a ``(dim, c)`` block in the operator's dtype and device, checked.

    Args:
        start: ``(dim,)`` or ``(dim, c)``: one start vector or ``c`` of them (columns).
        dim: The operator's dimension.
        dtype: The operator's dtype.
        device: The operator's device.

    Raises:
        LandscapeInputError: Not a tensor, a shape other than ``(dim,)``/``(dim, c)``, a
            NaN or inf, or a zero column.
    """
    if not isinstance(start, Tensor):
        raise LandscapeInputError(
            f"start: a {type(start).__name__}; give a tensor of shape ({dim},) or ({dim}, c), "
            "e.g. a previous result's eigenvectors"
        )
    if start.ndim not in (1, 2) or start.shape[0] != dim or start.numel() == 0:
        raise LandscapeInputError(
            f"start: shape {tuple(start.shape)} does not fit an operator of dimension {dim}; "
            f"give ({dim},) or ({dim}, c), e.g. a previous result's eigenvectors"
        )
    block = start.detach().reshape(dim, -1).to(device=device, dtype=dtype)
    if not bool(torch.isfinite(block).all()):
        raise LandscapeInputError("start: holds NaN or inf; give finite vectors or no start")
    if bool((block.norm(dim=0) == 0).any()):
        raise LandscapeInputError("start: a column is zero; give nonzero vectors or no start")
    return block


def fold_columns(block: Tensor, width: int) -> Tensor:
    """The ``c`` start columns summed onto ``width`` columns (column ``j`` onto ``j % width``).

    A Krylov space grown from the sum of ``c`` eigenvectors holds all of them after ``c``
    products, so a single-vector Lanczos warm-starts ``k`` pairs from one column.
    """
    unit = block / block.norm(dim=0)
    folded = torch.zeros(block.shape[0], min(width, block.shape[1]), dtype=block.dtype,
                         device=block.device)  # fmt: skip
    for j in range(block.shape[1]):
        folded[:, j % width] += unit[:, j]
    return folded
