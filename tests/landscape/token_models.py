"""Stand-ins for Hugging Face types, without ``transformers``: token models and their batches.

``ModelOutput`` is an ``OrderedDict`` subclass with attribute access (as HF's is),
``BatchEncoding`` a ``UserDict`` of ``input_ids``/``attention_mask`` (as HF's is), and
:class:`TinyAttention` an embedding, one ``scaled_dot_product_attention`` layer and a
classifier head, taking keyword arguments and returning a ``ModelOutput``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, UserDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB, LENGTH, CLASSES = 11, 6, 3


class ModelOutput(OrderedDict):
    """Keys readable as attributes, as ``transformers.utils.ModelOutput``."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


class BatchEncoding(UserDict):
    """A tokenizer's output, as ``transformers.BatchEncoding``: a ``UserDict`` of tensors."""


class TinyAttention(nn.Module):
    """Token ids -> embeddings -> one attention layer -> masked mean -> class logits.

    Its 4D attention takes the fused CPU kernel by default, which has no double backward.

    ``explicit=True`` writes attention out as softmax(QK^T / sqrt(d)) V: the reference.
    """

    def __init__(self, dim: int = 4, explicit: bool = False, loss_too: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, CLASSES)
        self.explicit, self.loss_too = explicit, loss_too

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> ModelOutput:
        if input_ids.is_floating_point():
            raise TypeError(f"token ids must be integers, got {input_ids.dtype}")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        h = self.embed(input_ids)
        q, k, v = (t[:, None] for t in self.qkv(h).chunk(3, dim=-1))  # (n, heads=1, T, d)
        keys = mask[:, None, None, :].bool()  # attend to real tokens only
        if self.explicit:
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            a = torch.softmax(scores.masked_fill(~keys, float("-inf")), dim=-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        a, weights = a[:, 0], mask[..., None].to(a.dtype)
        pooled = (a * weights).sum(1) / weights.sum(1)
        logits = self.head(torch.tanh(pooled))
        if self.loss_too:  # HF puts the loss first when labels are given
            return ModelOutput(loss=logits.sum(), logits=logits)
        return ModelOutput(logits=logits)


def token_data(n: int = 48, seed: int = 0) -> tuple[dict[str, Tensor], Tensor]:
    """``n`` padded sequences (int64 ids, a mask with 2..LENGTH real tokens) and labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    real = torch.randint(2, LENGTH + 1, (n,), generator=g)
    mask = (torch.arange(LENGTH)[None, :] < real[:, None]).long()
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    return {"input_ids": ids * mask, "attention_mask": mask}, labels


class TokenDataset(torch.utils.data.Dataset):
    """Items ``({"input_ids", "attention_mask"}, label)``: a DataLoader collates dicts."""

    def __init__(self, inputs: dict[str, Tensor], labels: Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return {key: value[i] for key, value in self.inputs.items()}, self.labels[i]
