"""A network that is not in flatscape: a pre-norm residual MLP, as a user would write it.

flatscape imports this file only when a command names it (``--model
examples/own_model/residual_net.py:ResidualMLP``), and records its SHA-256 in every
checkpoint made from it.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """``x + tanh(W LayerNorm(x))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(self.norm(x)))


class ResidualMLP(nn.Module):
    """Inputs -> width -> ``blocks`` residual blocks -> classes."""

    def __init__(self, inputs: int = 64, width: int = 32, blocks: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.Sequential(*(Residual(width) for _ in range(blocks)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(torch.tanh(self.embed(x.flatten(1)))))
