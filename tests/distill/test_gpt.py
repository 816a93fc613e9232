"""The registry's tiny GPT: shapes, causality, its parameter count, and a Hessian that
differentiates twice (Lanczos against a dense float64 Hessian)."""

import pytest
import torch
import torch.nn.functional as F

from distill.errors import DistillInputError
from distill.models import build_model, count_parameters, input_kwargs
from tests.references import dense_hessian


def token_loss(logits, labels):
    """Mean cross-entropy over every position."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def test_shapes_and_its_parameter_count():
    torch.manual_seed(0)
    model = build_model("gpt", num_classes=11, context=8, width=16, layers=2, heads=4)
    ids = torch.randint(0, 11, (3, 8))
    assert model(ids).shape == (3, 8, 11)
    assert model(ids[:, :5]).shape == (3, 5, 11)  # shorter sequences are fine
    block = (2 * 16) + (16 * 48 + 48) + (16 * 16 + 16) + (2 * 16) + (16 * 64 + 64) + (64 * 16 + 16)
    expected = 11 * 16 + 8 * 16 + 2 * block + 2 * 16 + (16 * 11 + 11)
    assert count_parameters(model) == expected
    assert input_kwargs("gpt", (8,)) == {"context": 8}


def test_a_position_sees_no_later_token():
    torch.manual_seed(0)
    model = build_model("gpt", context=10).eval()
    ids = torch.randint(0, 16, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 16
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_bad_sizes_are_one_line():
    with pytest.raises(DistillInputError, match="multiple of heads"):
        build_model("gpt", width=30, heads=4)
    with pytest.raises(DistillInputError, match="layers must be a positive integer"):
        build_model("gpt", layers=0)
    with pytest.raises(DistillInputError, match=r"\(L,\) token ids"):
        input_kwargs("gpt", (3, 8))


def test_its_hessian_is_the_dense_one_in_float64():
    """Top-2 eigenvalues by flatscape's Lanczos against eigvalsh of the dense Hessian.

    The reference is reverse-over-reverse (``torch.autograd.functional.hessian``): on this
    model ``torch.func.hessian`` (forward-over-reverse) differs from it by 1e-2 while
    central differences of the gradient agree with it to 2e-9.
    """
    from landscape import model_curvature

    torch.manual_seed(0)
    model = build_model("gpt", num_classes=5, context=6, width=8, layers=1, heads=2).double()
    ids = torch.randint(0, 5, (16, 6))
    labels = torch.roll(ids, -1, dims=1)
    result = model_curvature(model, token_loss, [(ids, labels)], top_k=2, tol=1e-10,
                             dtype=torch.float64, max_memory=None)  # fmt: skip
    dense = dense_hessian(model, token_loss, ids, labels)
    top = torch.linalg.eigvalsh(dense).flip(0)[:2]
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), top,
                               rtol=1e-8, atol=1e-10)  # fmt: skip
