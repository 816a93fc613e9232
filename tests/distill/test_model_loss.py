"""``--loss model``: labels into the inputs, the model's own loss out; refusals in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillInputError
from distill.model_loss import own_loss, own_loss_batches
from landscape import model_curvature


class Classifier(nn.Module):
    """Returns ``{"logits", "loss"}``, the loss only when given labels (as HF models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, features, labels=None):
        logits = self.net(features)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return {"logits": logits, "loss": loss}


def test_own_loss_curvature_equals_the_named_loss():
    torch.manual_seed(0)
    model = Classifier().double()
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    named = model_curvature(model, F.cross_entropy, [(x, y)], top_k=2, tol=1e-10)
    batches = own_loss_batches(model, [(x, y)])
    assert set(batches[0][0]) == {"features", "labels"}  # forward's first argument, labels
    own = model_curvature(model, own_loss, batches, top_k=2, tol=1e-10)
    assert own.eigenvalues == pytest.approx(named.eigenvalues, rel=1e-9)


def test_a_model_without_labels_is_one_line():
    with pytest.raises(DistillInputError, match="takes no labels="):
        own_loss_batches(nn.Linear(4, 3), [(torch.zeros(2, 4), torch.zeros(2))])
