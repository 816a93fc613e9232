"""A tiny decoder-only transformer (GPT), small enough to train and probe on 2 CPU cores.

Pre-norm blocks (LayerNorm, causal self-attention, LayerNorm, GELU MLP), learned token
and position embeddings, an untied output head (a tied one would be one tensor under two
names, which a ``.safetensors`` file cannot hold). Attention is written out
(``softmax(QK^T / sqrt(d) + mask) V``) rather than through a fused kernel, so the model
differentiates twice on every device: Hessian-vector products need that.

The model maps token ids ``(N, L)`` (``L <= context``) to next-token logits
``(N, L, num_classes)``; ``num_classes`` is the vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``causal``: position ``t`` sees positions ``<= t`` only."""

    def __init__(self, width: int, heads: int, context: int, causal: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask if causal else torch.zeros_like(mask), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, L, width)`` to ``(N, L, width)``."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(width // self.heads)
        weights = torch.softmax(scores + self.mask[:length, :length], dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        return self.proj(out)


class Block(nn.Module):
    """``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, context: int, causal: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads, context, causal)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        """One residual block."""
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token ids ``(N, L)`` to next-token logits ``(N, L, num_classes)``."""

    def __init__(self, num_classes: int, context: int, width: int, layers: int, heads: int):
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(num_classes, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads, context) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        """Next-token logits of every position."""
        length = ids.shape[-1]
        if length > self.context:
            raise ValueError(f"sequences of {length} tokens; this model takes {self.context}")
        positions = torch.arange(length, device=ids.device)
        x = self.tokens(ids.long()) + self.positions(positions)
        return self.head(self.norm(self.blocks(x)))
