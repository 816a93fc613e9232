"""The dense references themselves, against central finite differences of the gradient.

Every operator test compares against :func:`tests.landscape.cases.dense_hessian`; a wrong
reference would pass a wrong operator (``torch.func.hessian`` of a LayerNorm network is
wrong in torch 2.13), so the reference is checked here by a method that shares no
second-order autograd rule with it.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from tests.landscape.cases import MATRIX_CASES, dense_hessian, make_float64


def _finite_difference_hessian(model, loss_fn, batches, eps: float = 1e-5) -> torch.Tensor:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    buffers = dict(model.named_buffers())
    total = sum(len(y) for _, y in batches)

    def gradient(theta):
        theta = theta.clone().requires_grad_(True)
        chunks = theta.split([s.numel() for s in shapes])
        tensors = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        loss = sum(
            len(y) / total * loss_fn(functional_call(model, {**buffers, **tensors}, (x,)), y)
            for x, y in batches
        )
        return torch.autograd.grad(loss, theta)[0]

    model.eval()
    columns = []
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        columns.append((gradient(flat + step) - gradient(flat - step)) / (2 * eps))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("case", MATRIX_CASES, ids=[c.id for c in MATRIX_CASES])
def test_dense_hessian_equals_finite_differences(case):
    model, loss_fn, batches = make_float64(case)
    reference = dense_hessian(model, loss_fn, batches)
    differences = _finite_difference_hessian(model, loss_fn, batches)
    scale = reference.abs().max()
    torch.testing.assert_close(reference, differences, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(reference, reference.T, rtol=0, atol=1e-12 * scale)
