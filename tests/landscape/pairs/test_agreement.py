"""Agreement, KL and linear CKA against direct numpy/scipy formulas."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.pairs import function_agreement, layer_cka, linear_cka


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 4))


def _perturbed(model: nn.Module, scale: float = 0.4) -> nn.Module:
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def _batches() -> list:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=g)
    return [(x[:13], torch.zeros(13).long()), (x[13:], torch.zeros(17).long())]


def test_a_model_agrees_with_itself_completely():
    model = _net(0)
    found = function_agreement(model, copy.deepcopy(model), _batches())
    assert (found.agreement, found.kl, found.examples) == (1.0, 0.0, 30)


def test_agreement_and_kl_equal_scipy_on_the_softmax():
    teacher = _net(0)
    student = _perturbed(teacher)
    x = torch.cat([b[0] for b in _batches()])
    with torch.no_grad():
        p = torch.softmax(teacher(x).double(), -1).numpy()
        q = torch.softmax(student(x).double(), -1).numpy()
    found = function_agreement(teacher, student, _batches())
    assert found.agreement == np.mean(p.argmax(1) == q.argmax(1))
    assert 0 < found.agreement < 1
    assert found.kl == pytest.approx(np.mean(scipy.stats.entropy(p, q, axis=1)), rel=1e-6)


def test_token_positions_labelled_minus_100_are_left_out():
    teacher = _net(0)
    student = _perturbed(teacher)
    x = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(3, 6).long()
    labels[:, 4:] = -100
    found = function_agreement(teacher, student, [(x, labels)])
    kept = function_agreement(teacher, student, [(x[:, :4].reshape(12, 5), torch.zeros(12).long())])
    assert found.examples == 12
    assert found.agreement == kept.agreement and found.kl == pytest.approx(kept.kl, rel=1e-6)


def _numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s formula, in numpy, from the centred features."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("n, p, q", [(40, 3, 5), (6, 20, 30)], ids=["features", "gram"])
def test_linear_cka_equals_the_numpy_formula(n, p, q):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = x[:, :1] * 2 + 0.5 * torch.randn(n, q, generator=g, dtype=torch.float64)
    assert linear_cka(x, y) == pytest.approx(_numpy_cka(x.numpy(), y.numpy()), rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    rotation = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))[0]
    assert linear_cka(x, 3.0 * x @ rotation + 1.0) == pytest.approx(1.0, rel=1e-10)


def test_layer_cka_is_one_with_itself_and_the_formula_on_hooked_outputs():
    teacher, student, batches = _net(0), _net(1), _batches()
    same = layer_cka(teacher, copy.deepcopy(teacher), batches)
    assert list(same) == ["0", "2", "4"]
    assert all(v == pytest.approx(1.0, rel=1e-12) for v in same.values())
    found = layer_cka(teacher, student, batches, layers=["2"])
    x = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        ours, theirs = teacher[:3](x).numpy(), student[:3](x).numpy()
    assert found["2"] == pytest.approx(_numpy_cka(ours.astype(np.float64),
                                                  theirs.astype(np.float64)), rel=1e-5)  # fmt: skip


def test_bad_inputs_are_one_input_error():
    with pytest.raises(LandscapeInputError, match="same examples"):
        linear_cka(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(LandscapeInputError, match="not a module"):
        layer_cka(_net(0), _net(1), _batches(), layers=["9"])
    with pytest.raises(LandscapeInputError, match="same classes"):
        function_agreement(_net(0), nn.Linear(5, 3), _batches())
