r"""The mean loss of a model at perturbed weights :math:`w + c \odot u`, without touching the model.

Weights are substituted with :func:`torch.func.functional_call`, so the user's module is
never modified, not even temporarily; BatchNorm buffers are cloned when batch statistics
are used (``bn_mode="train"``), so its running statistics never move either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_size,
    batch_weights,
    check_bn_mode,
    move_batch,
)
from landscape.operators.mean_loss import (
    ParameterSelection,
    functional_tensors,
    model_in_dtype,
    require_finite,
    select_parameters,
)


class PerturbedLoss:
    r""":math:`u \mapsto L(w + c \odot u)`, the size-weighted mean loss over fixed batches.

    Args:
        model: Any module; left untouched.
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's *mean* loss.
        batches: ``(inputs, targets)`` pairs.
        params: Names or tensors of the parameters to perturb (default: all trainable).
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).

    Attributes:
        names: Perturbed parameter names, in model order.
        weights: Their unperturbed values :math:`w`, detached, by name.
        loss: :math:`L(w)`.
        evaluations: Passes over the data so far (a gradient counts one).
        progress: Optional callback, called with 1 after each pass (a progress bar's
            ``update``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: ParameterSelection = None,
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
    ) -> None:
        check_bn_mode(bn_mode)
        self.names = select_parameters(model, params)
        model, self.dtype, self.device = model_in_dtype(model, dtype)
        self.model, self.loss_fn, self.bn_mode = model, loss_fn, bn_mode
        self.batches = [move_batch(b, self.device, self.dtype) for b in batches]
        self.batch_weights = batch_weights(self.batches)
        named = dict(model.named_parameters())
        self.weights = {n: named[n].detach() for n in self.names}
        self.evaluations = 0
        self.progress: Callable[[int], object] | None = None
        with torch.no_grad():
            examples = sum(batch_size(b) for b in self.batches)
            self.loss = require_finite(float(self.at(self.weights)), examples)

    def at(self, tensors: dict[str, Tensor]) -> Tensor:
        """Mean loss with the perturbed parameters replaced by ``tensors`` (by name)."""
        full = functional_tensors(self.model, self.bn_mode, tensors)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with analysis_mode(self.model, self.bn_mode):
            for weight, (inputs, targets) in zip(self.batch_weights, self.batches, strict=True):
                outputs = functional_call(self.model, full, (inputs,))
                total = total + weight * self.loss_fn(outputs, targets)
        self.evaluations += 1
        if self.progress is not None:
            self.progress(1)
        return total

    def perturbed(self, scales: dict[str, Tensor], u: dict[str, Tensor]) -> dict[str, Tensor]:
        r"""The weights :math:`w + c \odot u`, by name."""
        return {n: self.weights[n] + scales[n] * u[n] for n in self.names}

    def increase(self, scales: dict[str, Tensor], u: dict[str, Tensor]) -> float:
        r""":math:`L(w + c \odot u) - L(w)`, without gradients."""
        with torch.no_grad():
            return float(self.at(self.perturbed(scales, u))) - self.loss

    def gradient(
        self, scales: dict[str, Tensor], u: dict[str, Tensor]
    ) -> tuple[float, dict[str, Tensor]]:
        r""":math:`L(w + c \odot u)` and its gradient with respect to :math:`u`."""
        leaves = {n: t.detach().requires_grad_(True) for n, t in u.items()}
        with torch.enable_grad():
            value = self.at(self.perturbed(scales, leaves))
            grads = torch.autograd.grad(value, [leaves[n] for n in self.names], allow_unused=True)
        return float(value.detach()), {
            n: torch.zeros_like(leaves[n]) if g is None else g
            for n, g in zip(self.names, grads, strict=True)
        }


def gaussian_direction(weights: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Standard normal entries in the shapes of ``weights``.

    Drawn on the CPU in float64 in parameter order, so a seed gives the same numbers on
    every device and dtype.
    """
    return {
        n: torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w.device, w.dtype)
        for n, w in weights.items()
    }


def unit_direction(weights: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """A :func:`gaussian_direction` normalised to unit Euclidean length."""
    z = gaussian_direction(weights, generator)
    length = norm(z)
    return {n: t / length for n, t in z.items()}


def norm(u: dict[str, Tensor]) -> float:
    """Euclidean norm of a direction stored as a dict of tensors."""
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in u.values()))
