"""A tiny Vision Transformer (ViT), small enough to train and probe on 2 CPU cores.

Square images ``(N, C, S, S)`` are cut into ``patch`` x ``patch`` patches, each embedded
by one linear map (a convolution with stride ``patch``), plus a learned position
embedding; pre-norm blocks with bidirectional attention (:class:`distill.gpt.Block`,
attention written out so the model differentiates twice); a final LayerNorm, the mean over
patches (no class token) and a linear head. Dosovitskiy et al. 2021, *An Image is Worth
16x16 Words*, at toy scale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.gpt import Block


class ViT(nn.Module):
    """Images ``(N, C, S, S)`` to class logits ``(N, num_classes)``."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, patch: int,
                 width: int, layers: int, heads: int) -> None:  # fmt: skip
        super().__init__()
        self.image_size = image_size
        tokens = (image_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, width, patch, stride=patch)
        self.positions = nn.Parameter(0.02 * torch.randn(1, tokens, width))
        self.blocks = nn.Sequential(
            *(Block(width, heads, tokens, causal=False) for _ in range(layers))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits: the mean over patches of the last block's normalized outputs."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            size = tuple(images.shape[-2:])
            raise ValueError(f"images of {size}; this model takes {self.image_size} squared")
        x = self.embed(images).flatten(2).transpose(1, 2) + self.positions
        return self.head(self.norm(self.blocks(x)).mean(dim=1))
