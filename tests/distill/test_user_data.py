"""Token labels ``(N, L)`` in the user's data, and the losses that take them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.errors import DistillInputError
from distill.sources import analysis_loss, check_loss
from distill.user_data import load_npz


class PerPosition(nn.Module):
    """Logits ``(N, L, 5)`` from float inputs ``(N, L)`` (integer inputs pass with issue 24 §1)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.float().unsqueeze(-1))


def _tokens_npz(path, y_test=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (6, 4))
    y = x.copy()
    y[1, 2:] = -100
    np.savez(path, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2] if y_test is None else y_test)
    return path


def test_token_labels_are_accepted_with_their_padding(tmp_path):
    bundle = load_npz(_tokens_npz(tmp_path / "tokens.npz"))
    labels = bundle.train.tensors[1]
    assert labels.dtype == torch.long and labels.shape == (6, 4) and int(labels[1, 3]) == -100
    model = PerPosition()
    for name in ("causal_lm", "token_ce"):
        loss_fn, record = analysis_loss(name)
        check_loss(loss_fn, model, bundle.train.tensors, name)
        assert record == {"name": name} and loss_fn.count(labels) > 0


def test_token_labels_need_a_token_loss_and_a_token_loss_needs_them(tmp_path):
    bundle = load_npz(_tokens_npz(tmp_path / "tokens.npz"))
    with pytest.raises(DistillInputError, match="--loss causal_lm or --loss token_ce"):
        check_loss(*analysis_loss("cross_entropy")[:1], PerPosition(), bundle.train.tensors,
                   "cross_entropy")  # fmt: skip
    classes = (torch.randn(8, 3), torch.randint(0, 3, (8,)))
    with pytest.raises(DistillInputError, match="needs integer labels \\(N, L\\)"):
        check_loss(analysis_loss("causal_lm")[0], nn.Linear(3, 3), classes, "causal_lm")


def test_negative_token_labels_other_than_padding_are_refused(tmp_path):
    path = _tokens_npz(tmp_path / "bad.npz", y_test=np.full((2, 4), -1))
    with pytest.raises(DistillInputError, match="must be >= 0 or -100"):
        load_npz(path)


def test_cross_entropy_training_refuses_token_labels_in_one_line(tmp_path):
    from distill.user_data import require_class_labels

    bundle = load_npz(_tokens_npz(tmp_path / "tokens.npz"))
    with pytest.raises(DistillInputError, match="--loss causal_lm or token_ce"):
        require_class_labels(bundle, "train")
