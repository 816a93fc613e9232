"""Edges a review found: token losses in the Fisher, dict inputs under a tight budget."""

import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.operators.fisher import FisherOperator
from landscape.operators.hessian import HessianOperator


def _token_ce(logits, labels):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


_token_ce.count = lambda labels: int((labels != -100).sum())


@pytest.mark.parametrize("kind", ["mc", "empirical"])
def test_the_fisher_refuses_a_token_loss(kind):
    """Its output-space products take one prediction per example (N, C); token logits are
    (N, L, V), which it would sum over the wrong axis."""
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    ids = torch.randint(0, 5, (6, 3))
    with pytest.raises(LandscapeInputError, match="counts tokens"):
        FisherOperator(model, _token_ce, [(ids, ids)], kind=kind)


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        return self.layer(input_ids * attention_mask)


def test_a_budget_too_small_for_dict_inputs_is_one_line():
    inputs = {"input_ids": torch.randn(16, 4), "attention_mask": torch.ones(16, 4)}
    targets = torch.randint(0, 3, (16,))
    with pytest.raises(LandscapeInputError, match="graph_budget 100 B"):
        HessianOperator(DictModel(), nn.functional.cross_entropy, [(inputs, targets)],
                        keep_graphs=True, graph_budget=100)  # fmt: skip


def test_an_eigen_map_refuses_a_budget_with_a_batch_size(tmp_path):
    from landscape.surface.eigenmap import eigen_map

    model = nn.Linear(4, 3)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    with pytest.raises(LandscapeInputError, match="nothing to bound with batch_size"):
        eigen_map(model, nn.functional.cross_entropy, data, tmp_path / "e.h5",
                  x_range="-1:1:2", y_range=None, batch_size=4, max_memory=10**9)  # fmt: skip
    assert not (tmp_path / "e.h5").exists()
