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

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_size,
    batch_weights,
    call_model,
    check_bn_mode,
    in_analysis_mode,
    model_outputs,
    move_batch,
)
from landscape.operators.batching import index_examples
from landscape.operators.mean_loss import (
    ParameterSelection,
    functional_tensors,
    model_in_dtype,
    require_finite,
    select_parameters,
)
from landscape.operators.memory import GraphBudget, SavedBytes

GRADIENT_RESERVE = 2.0
"""Memory of one gradient in graphs of its batch: the graph, and the backward pass's
temporaries beside it (freed as it goes)."""


class PerturbedLoss:
    r""":math:`u \mapsto L(w + c \odot u)`, the mean loss over fixed batches.

    Batches are weighted by :func:`~landscape._types.batch_weight` (examples, or the tokens
    a token loss counts).

    Args:
        model: Any module; left untouched.
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's *mean* loss.
        batches: ``(inputs, targets)`` pairs.
        params: Names or tensors of the parameters to perturb (default: all trainable).
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics).
        graph_budget: Bytes one batch's gradient graph may take (default: no limit). The
            gradient is taken batch by batch, so one graph is alive at a time; the first
            batch's is measured at construction, and a batch whose backward pass
            (:data:`GRADIENT_RESERVE` graphs) would not fit raises
            :class:`~landscape.errors.LandscapeInputError` with the batch size that does.

    Attributes:
        names: Perturbed parameter names, in model order.
        weights: Their unperturbed values :math:`w`, detached, by name.
        loss: :math:`L(w)`.
        evaluations: Passes over the data so far (a gradient counts one).
        progress: Optional callback, called with 1 after each pass (a progress bar's
            ``update``).
        budget: The measured graph bytes and the budget (:class:`GraphBudget`).
    """

    @in_analysis_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: ParameterSelection = None,
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
        graph_budget: int | None = None,
    ) -> None:
        check_bn_mode(bn_mode)
        self.names = select_parameters(model, params)
        model, self.dtype, self.device = model_in_dtype(model, dtype)
        self.model, self.loss_fn, self.bn_mode = model, loss_fn, bn_mode
        self.batches = [move_batch(b, self.device, self.dtype) for b in batches]
        self.batch_weights = batch_weights(self.batches, loss_fn)
        named = dict(model.named_parameters())
        self.weights = {n: named[n].detach() for n in self.names}
        self.evaluations = 0
        self.progress: Callable[[int], object] | None = None
        with torch.no_grad():
            examples = sum(batch_size(b) for b in self.batches)
            self.loss = require_finite(float(self.at(self.weights)), examples)
        largest = max(batch_size(b) for b in self.batches)
        self.budget = GraphBudget(
            graph_budget, largest, GRADIENT_RESERVE, "gradient graph", self._small_graph_bytes
        )
        if graph_budget is not None:  # before any long run: one gradient of the first batch
            self.budget.measure(*self._graph_bytes(self.batches[0]))

    def at(self, tensors: dict[str, Tensor]) -> Tensor:
        """Mean loss with the perturbed parameters replaced by ``tensors`` (by name)."""
        full = functional_tensors(self.model, self.bn_mode, tensors)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with analysis_mode(self.model, self.bn_mode):
            for weight, batch in zip(self.batch_weights, self.batches, strict=True):
                total = total + weight * self._batch_loss(full, batch)
        self._counted()
        return total

    def _batch_loss(self, full: dict[str, Tensor], batch: Batch) -> Tensor:
        inputs, targets = batch
        return self.loss_fn(model_outputs(call_model(self.model, inputs, full)), targets)

    def _counted(self) -> None:
        self.evaluations += 1
        if self.progress is not None:
            self.progress(1)

    def _graph_bytes(self, batch: Batch) -> tuple[int, int]:
        """Examples and bytes of the gradient graph of ``batch`` at :math:`u = 0`."""
        leaves = {n: torch.zeros_like(w, requires_grad=True) for n, w in self.weights.items()}
        mode = analysis_mode(self.model, self.bn_mode)
        with SavedBytes(list(leaves.values())) as saved, torch.enable_grad(), mode:
            moved = {n: self.weights[n] + leaves[n] for n in self.names}  # as gradient() does
            self._batch_loss(functional_tensors(self.model, self.bn_mode, moved), batch)
        return batch_size(batch), saved.bytes

    def _small_graph_bytes(self) -> tuple[int, int]:
        inputs, targets = self.batches[0]
        return self._graph_bytes((index_examples(inputs, slice(0, 2)), targets[:2]))

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
        r""":math:`L(w + c \odot u)` and its gradient with respect to :math:`u`.

        Batch by batch: one batch's graph is alive at a time, whatever the examples.
        """
        value = 0.0
        grads = {n: torch.zeros_like(u[n]) for n in self.names}
        for weight, batch in zip(self.batch_weights, self.batches, strict=True):
            leaves = {n: t.detach().requires_grad_(True) for n, t in u.items()}
            with torch.enable_grad(), analysis_mode(self.model, self.bn_mode):
                full = functional_tensors(self.model, self.bn_mode, self.perturbed(scales, leaves))
                loss = weight * self._batch_loss(full, batch)
                parts = torch.autograd.grad(
                    loss, [leaves[n] for n in self.names], allow_unused=True
                )
            value += float(loss.detach())
            for n, g in zip(self.names, parts, strict=True):
                if g is not None:
                    grads[n] += g
        self._counted()
        return value, grads


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
