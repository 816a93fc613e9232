"""Token losses weight batches by their counted tokens, not their sequences.

Sequences padded unequally (labels -100) and split into batches of 3, 2 and 4 must give
the Hessian, surface values and sharpness of the mean token loss over all counted tokens:
those of one batch holding every sequence, checked in float64 against a dense Hessian
from ``torch.func.hessian``. The per-sequence mean (batches weighted by their sequences)
differs, so the checks can tell.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from distill.losses import IGNORE_INDEX, causal_lm_loss, token_ce_loss
from landscape import model_curvature, sharpness_report
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import GGNOperator
from landscape.operators.hessian import HessianOperator
from landscape.sharpness.objective import PerturbedLoss
from landscape.surface.evaluate import SurfaceEvaluator
from landscape.surface.loss_surface import loss_surface

VOCAB, WIDTH, LENGTH = 7, 4, 6
SIZES = (3, 2, 4)
PADDED = (0, 3, 1, 4, 0, 2, 5, 1, 3)
"""Positions padded at the end of each sequence: unequal counts per batch."""


class TinyLM(nn.Module):
    """Embedding, one causal self-attention head (written out), a linear head to the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(WIDTH)
        future = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).triu(1)
        attention = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.head(h + torch.tanh(attention @ v))


def per_sequence(loss_fn):
    """The same loss without ``count``: batches weighted by their sequences."""
    return lambda outputs, labels: loss_fn(outputs, labels)


def per_token_only(loss_fn):
    """The same loss with its ``count`` and without ``correct``."""

    def loss(outputs, labels):
        return loss_fn(outputs, labels)

    loss.count = loss_fn.count
    return loss


def token_data(loss_fn) -> tuple[nn.Module, Tensor, Tensor]:
    """The model in float64, token inputs ``(9, 6)`` and labels padded with -100."""
    torch.manual_seed(0)
    model = TinyLM().double()
    tokens = torch.randint(0, VOCAB, (sum(SIZES), LENGTH))
    labels = tokens.clone() if loss_fn is causal_lm_loss else torch.randint(0, VOCAB, tokens.shape)
    for row, padded in enumerate(PADDED):
        if padded:
            labels[row, -padded:] = IGNORE_INDEX
    return model, tokens, labels


def batched(tokens: Tensor, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
    return list(zip(tokens.split(SIZES), labels.split(SIZES), strict=True))


def dense_hessian(model: nn.Module, loss_fn, tokens: Tensor, labels: Tensor) -> Tensor:
    """The Hessian of ``loss_fn`` over one batch of every sequence, by ``torch.func.hessian``."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta: Tensor) -> Tensor:
        parts = theta.split([math.prod(s) for s in shapes])
        tensors = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, tensors, (tokens,)), labels)

    return torch.func.hessian(loss)(flat)


def relative(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


LOSSES = [pytest.param(causal_lm_loss, id="causal_lm"), pytest.param(token_ce_loss, id="token_ce")]


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_counts_are_the_tokens_the_mean_is_over(loss_fn):
    _, tokens, labels = token_data(loss_fn)
    shift = 1 if loss_fn is causal_lm_loss else 0
    assert loss_fn.count(labels) == int((labels[:, shift:] != IGNORE_INDEX).sum())
    assert [loss_fn.count(y) for _, y in batched(tokens, labels)] != [3, 2, 4]


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_hessian_over_padded_batches_is_that_of_one_batch(loss_fn):
    model, tokens, labels = token_data(loss_fn)
    reference = dense_hessian(model, loss_fn, tokens, labels)
    H = HessianOperator(model, loss_fn, batched(tokens, labels), dtype=torch.float64)
    assert relative(H.to_dense(), reference) < 1e-10
    assert H.num_counted == loss_fn.count(labels) and H.num_examples == sum(SIZES)
    assert H.loss == pytest.approx(float(loss_fn(model(tokens), labels)), rel=1e-12)
    unweighted = HessianOperator(model, per_sequence(loss_fn), batched(tokens, labels))
    assert relative(unweighted.to_dense(), reference) > 1e-2


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_ggn_over_padded_batches_is_that_of_one_batch(loss_fn):
    model, tokens, labels = token_data(loss_fn)
    reference = GGNOperator(model, loss_fn, [(tokens, labels)]).to_dense()
    G = GGNOperator(model, loss_fn, batched(tokens, labels))
    assert G.output_hessian_name == "autograd"
    assert relative(G.to_dense(), reference) < 1e-10


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_model_curvature_rebatched_keeps_the_token_mean(loss_fn):
    model, tokens, labels = token_data(loss_fn)
    top = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, tokens, labels))[-1]
    result = model_curvature(
        model, loss_fn, batched(tokens, labels), top_k=1, batch_size=2, tol=1e-12,
        dtype=torch.float64, hvp="double_backward",
    )  # fmt: skip
    assert result.eigenvalues[0] == pytest.approx(float(top), rel=1e-10)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_surface_values_are_token_means(loss_fn, tmp_path):
    model, tokens, labels = token_data(loss_fn)
    torch.manual_seed(1)
    direction = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    coords = np.array([[0.0], [0.3]])
    values = SurfaceEvaluator(model, loss_fn, [direction]).evaluate(batched(tokens, labels), coords)
    moved = {n: p.detach() + 0.3 * direction[n] for n, p in model.named_parameters()}
    at_point = float(loss_fn(functional_call(model, moved, (tokens,)), labels))
    at_origin = float(loss_fn(model(tokens), labels))
    assert np.allclose(values.loss, [at_origin, at_point], rtol=1e-12, atol=0)
    unweighted = SurfaceEvaluator(model, per_sequence(loss_fn), [direction]).evaluate(
        batched(tokens, labels), coords
    )
    assert abs(unweighted.loss[1] - at_point) > 1e-3 * at_point
    surface = loss_surface(
        model, loss_fn, {"train": batched(tokens, labels)}, tmp_path / "s.h5",
        x_range="-1:1:3", batch_size=2,
    )  # fmt: skip
    assert surface.origin["train_loss"] == pytest.approx(at_origin, rel=1e-12)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_sharpness_is_that_of_the_token_mean(loss_fn):
    model, tokens, labels = token_data(loss_fn)
    options = {"rho": 0.05, "samples": 4, "steps": 3, "restarts": 1, "dtype": torch.float64}
    padded = sharpness_report(model, loss_fn, batched(tokens, labels), **options)
    whole = sharpness_report(model, loss_fn, [(tokens, labels)], **options)
    assert padded["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    for ours, reference in zip(padded["results"], whole["results"], strict=True):
        assert ours["increase"] == pytest.approx(reference["increase"], rel=1e-10)
    u = {n: 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    moved = {n: p.detach() + u[n] for n, p in model.named_parameters()}
    dense = float(loss_fn(functional_call(model, moved, (tokens,)), labels))
    objective = PerturbedLoss(model, loss_fn, batched(tokens, labels))
    assert float(objective.at(moved)) == pytest.approx(dense, rel=1e-12)
    unweighted = PerturbedLoss(model, per_sequence(loss_fn), batched(tokens, labels))
    assert abs(float(unweighted.at(moved)) - dense) > 1e-3 * dense


def test_pyhessian_which_weights_by_examples_refuses_a_token_loss():
    model, tokens, labels = token_data(causal_lm_loss)
    with pytest.raises(LandscapeInputError, match="use engine lanczos or power"):
        model_curvature(model, causal_lm_loss, batched(tokens, labels), engine="pyhessian")


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_a_profiles_loss_is_the_token_mean(loss_fn):
    from landscape.compare.profile import loss_and_accuracy

    model, tokens, labels = token_data(loss_fn)
    loss, accuracy = loss_and_accuracy(model, loss_fn, batched(tokens, labels))
    with torch.no_grad():
        assert loss == pytest.approx(float(loss_fn(model(tokens), labels)), rel=1e-12)
    with torch.no_grad():
        assert accuracy == loss_fn.correct(model(tokens), labels) / loss_fn.count(labels)
    assert math.isnan(loss_and_accuracy(model, per_token_only(loss_fn), [(tokens, labels)])[1])
