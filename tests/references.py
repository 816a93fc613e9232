"""References the tests share: a dense float64 Hessian, and a tiny token model's source."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def dense_hessian(model: nn.Module, loss_fn: Callable, inputs, targets) -> torch.Tensor:
    """The dense Hessian of ``loss_fn(model(inputs), targets)`` in the model's parameters.

    Reverse-over-reverse (``torch.autograd.functional.hessian``): on models with
    LayerNorm, ``torch.func.hessian`` (forward-over-reverse) is wrong in torch 2.13, while
    central differences of the gradient agree with this one to 2e-9.
    """
    params = dict(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        parts = vector.split([p.numel() for p in params.values()])
        tensors = {
            n: part.view(p.shape) for (n, p), part in zip(params.items(), parts, strict=True)
        }
        return loss_fn(torch.func.functional_call(model, tensors, (inputs,)), targets)

    return torch.autograd.functional.hessian(loss_of, flat)


TINY_LM = """
import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 7, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, x):
        return self.head(torch.tanh(self.embed(x.long())))
"""
"""Source of a tiny token model (embedding, tanh, linear head), for ``--model lm.py:TinyLM``."""
