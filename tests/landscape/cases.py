"""Small curvature problems shared by the landscape tests, each with a readable id.

A case is a model, a mean-reduced loss and a list of ``(inputs, targets)`` batches, all
built from a seed. :func:`dense_hessian` is the float64 reference every operator and
solver is checked against: the forward-mode Jacobian of ``torch.func.grad`` of the
size-weighted mean loss (``tests/landscape/test_references.py`` checks it against finite
differences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape._types import move_batch

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Case:
    """One problem: ``make(seed)`` returns ``(model, loss_fn, batches)`` in float64."""

    id: str
    make: Callable[[int], tuple[nn.Module, Callable, list[Batch]]]
    seed: int = 0


def _classification(sizes: list[int], shape: tuple[int, ...], classes: int) -> list[Batch]:
    return [(torch.randn(n, *shape), torch.randint(0, classes, (n,))) for n in sizes]


def _mlp_cross_entropy(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    return model, nn.functional.cross_entropy, _classification([7, 5, 3], (6,), 4)


def _mlp_mse_one_batch(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    return model, nn.functional.mse_loss, [(torch.randn(12, 5), torch.randn(12, 3))]


def _cnn_batchnorm(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 2, 3, stride=2),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 3),
    )
    batchnorm = model[1]
    batchnorm.running_mean.uniform_(-0.5, 0.5)
    batchnorm.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(batchnorm.weight, 0.5, 1.5)
    nn.init.uniform_(batchnorm.bias, -0.2, 0.2)
    model.train()  # the operator must use eval mode anyway and give the mode back
    return model, nn.functional.cross_entropy, _classification([6, 4], (1, 6, 6), 3)


class _Residual(nn.Module):
    """``x + tanh(W LayerNorm(x))``: a pre-norm residual block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.fc(self.norm(x)))


def _layernorm_residual(seed: int):
    """LayerNorm inside a residual block; its weight-input cross terms are what
    ``jvp(jacrev(...))`` gets wrong in torch 2.13."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), _Residual(6), nn.Linear(6, 3))
    nn.init.uniform_(model[2].norm.weight, 0.5, 1.5)
    nn.init.uniform_(model[2].norm.bias, -0.2, 0.2)
    return model, nn.functional.cross_entropy, _classification([6, 5], (5,), 3)


def _linear_low_rank(seed: int):
    """Least squares on 3 examples: the Hessian has rank 2 * 3 = 6 in dimension 22."""
    torch.manual_seed(seed)
    model = nn.Linear(10, 2)
    return (
        model,
        nn.functional.mse_loss,
        [(torch.randn(2, 10), torch.randn(2, 2)), (torch.randn(1, 10), torch.randn(1, 2))],
    )


def _frozen_first_layer(seed: int):
    """An MLP whose first layer does not train: operators cover the trainable rest only."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    model[0].requires_grad_(False)
    return model, nn.functional.cross_entropy, _classification([6, 4], (5,), 3)


def _sum_reduction(outputs: Tensor, targets: Tensor) -> Tensor:
    return nn.functional.mse_loss(outputs, targets, reduction="sum")


def _mlp_sum_loss(seed: int):
    """A loss that sums over its batch: batches still weigh n_k / N (the operators' rule)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    return model, _sum_reduction, [(torch.randn(5, 4), torch.randn(5, 2)),
                                   (torch.randn(3, 4), torch.randn(3, 2))]  # fmt: skip


class DictInput(nn.Module):
    """A model whose forward takes a dict of tensors, as many user models do."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.head(torch.tanh(self.a(batch["x"]) + self.b(batch["extra"])))


def _dict_inputs(seed: int):
    torch.manual_seed(seed)
    batches = [
        ({"x": torch.randn(n, 3), "extra": torch.randn(n, 2)}, torch.randint(0, 3, (n,)))
        for n in (5, 4)
    ]
    return DictInput(), nn.functional.cross_entropy, batches


CASES = [
    Case("mlp-crossentropy-3batches-unequal", _mlp_cross_entropy),
    Case("mlp-mse-1batch", _mlp_mse_one_batch),
    Case("cnn-batchnorm-eval-2batches", _cnn_batchnorm),
    Case("linear-mse-rank6", _linear_low_rank),
    Case("layernorm-residual-crossentropy-2batches", _layernorm_residual),
]
LOW_RANK_CASES = [c for c in CASES if "rank" in c.id]
MATRIX_CASES = CASES + [
    Case("mlp-frozen-first-layer", _frozen_first_layer),
    Case("mlp-sum-reduction-mse", _mlp_sum_loss),
    Case("dict-inputs-crossentropy", _dict_inputs),
]
"""Every operator is checked against its dense matrix on these (tests/landscape/operators)."""


def make_float64(case: Case) -> tuple[nn.Module, Callable, list[Batch]]:
    """The case's model, loss and batches, converted to float64."""
    model, loss_fn, batches = case.make(case.seed)
    batches = [move_batch(b, torch.device("cpu"), torch.float64) for b in batches]
    return model.double(), loss_fn, batches


def dense_hessian(model: nn.Module, loss_fn: Callable, batches: list[Batch]) -> Tensor:
    """Hessian of the size-weighted mean loss, in eval mode.

    ``jacfwd(grad(f))``, not ``torch.func.hessian`` (``jacfwd(jacrev(f))``), which is wrong
    for ``layer_norm`` in torch 2.13; where ``grad`` cannot run under ``jvp``
    (``mse_loss`` with closed-over targets: an immutable ``ZeroTensor``), ``hessian``.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    total = sum(len(y) for _, y in batches)
    buffers = dict(model.named_buffers())

    def mean_loss(theta: Tensor) -> Tensor:
        chunks = theta.split([s.numel() for s in shapes])
        tensors = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return sum(
            len(y) / total * loss_fn(functional_call(model, {**buffers, **tensors}, (x,)), y)
            for x, y in batches
        )

    was_training = model.training
    model.eval()
    try:
        try:
            return torch.func.jacfwd(torch.func.grad(mean_loss))(flat)
        except RuntimeError as err:
            if "ZeroTensor" not in str(err):
                raise
            return torch.func.hessian(mean_loss)(flat)
    finally:
        model.train(was_training)
