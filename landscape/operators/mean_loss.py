r"""The base of every curvature operator of a model's mean loss over fixed batches.

For batches :math:`B_1, \dots, B_K` of sizes :math:`n_1, \dots, n_K` with :math:`N = \sum_k n_k`
and a loss function returning the *mean* loss :math:`\ell_k(\theta)` of batch :math:`k`,

.. math::
    L(\theta) = \sum_k \frac{n_k}{N} \ell_k(\theta), \qquad
    A v = \sum_k \frac{n_k}{N} A_k v ,

so an operator is that of the mean loss over all :math:`N` examples, whatever the batch
sizes. For a loss that averages over tokens (one carrying ``count``, see
:func:`landscape._types.batch_weight`), :math:`n_k` is the batch's counted tokens and
:math:`N` theirs over all batches: the operator of the mean token loss, however the
sequences are batched and padded.

:class:`MeanLossOperator` holds what every such operator shares: the model (a converted
copy for another dtype), the loss, the selected parameters, the batches on the model's
device with their weights, the flat :math:`\leftrightarrow` per-parameter split, the loss
at the weights and its gradient. A subclass implements only the product of one
batch, :meth:`MeanLossOperator.batch_product` (:math:`A_k V`).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import re
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_size,
    batch_weight,
    batch_weights,
    call_model,
    check_bn_mode,
    in_analysis_mode,
    model_outputs,
    move_batch,
)
from landscape.errors import LandscapeInputError, NonFiniteLossError
from landscape.operators.base import CurvatureOperator
from landscape.operators.double_backward import twice_differentiable
from landscape.operators.memory import GraphBudget


@dataclass(frozen=True)
class ParameterFilter:
    """Parameters by name pattern: those matching any ``include`` glob and no ``exclude``.

    Patterns are :mod:`fnmatch` globs on the names of ``model.named_parameters()``
    (``"features.0.*"``, ``"*.weight"``, ``"fc.bias"``); only trainable parameters match.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def describe(self) -> dict[str, list[str]]:
        """``{"include": [...], "exclude": [...]}`` for a report."""
        return {"include": list(self.include), "exclude": list(self.exclude)}


ParameterSelection = Sequence[str] | Sequence[nn.Parameter] | ParameterFilter | None
"""None (every trainable parameter), names, parameter tensors, or a :class:`ParameterFilter`."""

_GLOB = re.compile(r"[*?\[]")


def _some_names(named: dict[str, nn.Parameter]) -> str:
    names = list(named)
    return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")


def _filtered(named: dict[str, nn.Parameter], selection: ParameterFilter) -> list[str]:
    trainable = [name for name, p in named.items() if p.requires_grad]
    for pattern in (*selection.include, *selection.exclude):
        if not fnmatch.filter(trainable, pattern):
            raise LandscapeInputError(
                f"params: {pattern!r} matches no trainable parameter; the model's trainable "
                f"ones are {_some_names({name: named[name] for name in trainable})}"
            )
    names = [
        name
        for name in trainable
        if any(fnmatch.fnmatchcase(name, g) for g in selection.include)
        and not any(fnmatch.fnmatchcase(name, g) for g in selection.exclude)
    ]
    if not names:
        raise LandscapeInputError(
            f"params: including {list(selection.include)} and excluding "
            f"{list(selection.exclude)} leaves no parameter"
        )
    return names


def select_parameters(model: nn.Module, params: ParameterSelection) -> list[str]:
    """Names of the parameters an operator is taken over (all trainable ones by default).

    Args:
        model: The module.
        params: None for every parameter with ``requires_grad``; parameter names (in the
            order given) or globs such as ``"layer1.*"`` (the trainable matches, in model
            order); parameter tensors; or a :class:`ParameterFilter`.

    Raises:
        LandscapeInputError: a name, glob or tensor that matches no parameter of
            ``model``, or nothing selected.
    """
    named = dict(model.named_parameters())
    if params is None:
        names = [name for name, p in named.items() if p.requires_grad]
    elif isinstance(params, ParameterFilter):
        names = _filtered(named, params)
    elif all(isinstance(p, str) for p in params):
        if any(_GLOB.search(p) for p in params):
            return _filtered(named, ParameterFilter(tuple(params)))
        names = list(params)
        unknown = [name for name in names if name not in named]
        if unknown:
            raise LandscapeInputError(
                f"params: {unknown[0]!r} is not a parameter of the model; it has "
                f"{_some_names(named)}"
            )
    else:
        by_id = {id(p): name for name, p in named.items()}
        if any(id(p) not in by_id for p in params):
            raise LandscapeInputError("params: a tensor given is not a parameter of the model")
        names = [by_id[id(p)] for p in params]
    if not names:
        raise LandscapeInputError("params: the model has no trainable parameters")
    return names


def model_in_dtype(
    model: nn.Module, dtype: torch.dtype | None
) -> tuple[nn.Module, torch.dtype, torch.device]:
    """The model (a converted copy when ``dtype`` is not its own), its dtype and device."""
    first = next(iter(model.parameters()))
    dtype = dtype or first.dtype
    if dtype != first.dtype:
        model = copy.deepcopy(model).to(dtype)
    return model, dtype, first.device


def functional_tensors(
    model: nn.Module, bn_mode: str, selected: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Parameters and buffers for ``functional_call``: ``selected`` by name, others frozen.

    Buffers are cloned in ``bn_mode="train"``, so batch statistics update copies and the
    model's running statistics never move.
    """
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    if bn_mode == "train":
        buffers = {n: b.clone() for n, b in buffers.items()}
    tensors.update(buffers)
    tensors.update(selected)
    return tensors


def batch_loss(
    model: nn.Module, loss_fn: LossFunction, tensors: dict[str, Tensor], batch: Batch
) -> Tensor:
    """Mean loss of one batch with the model's parameters and buffers replaced by ``tensors``."""
    inputs, targets = batch
    return loss_fn(model_outputs(call_model(model, inputs, tensors)), targets)


def require_finite(loss: float, examples: int) -> float:
    """Return ``loss``, or raise the one-line user error for a NaN/inf loss."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"the loss at these weights is {loss} on the {examples} examples given; "
            "the checkpoint or the inputs contain NaN/inf or diverged values",
            loss,
        )
    return loss


def mean_loss(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], bn_mode: str = "eval"
) -> float:
    """Mean loss over the batches (weighted by :func:`batch_weight`), no gradients; finite.

    The model's running statistics are not updated, even with ``bn_mode="train"``.
    """
    weights = batch_weights(batches, loss_fn)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad(), analysis_mode(model, bn_mode):
        losses = [float(batch_loss(model, loss_fn, buffers, batch)) for batch in batches]
    value = sum(w * v for w, v in zip(weights, losses, strict=True))
    return require_finite(value, sum(batch_size(b) for b in batches))


def weighted_sum(
    product_of_batch: Callable[[int], list[Tensor]], weights: Sequence[float]
) -> list[Tensor]:
    r""":math:`\sum_k w_k A_k V` over the batches, one batch's product alive at a time."""
    total = [weights[0] * part for part in product_of_batch(0)]  # out of place: may alias V
    for k in range(1, len(weights)):
        for acc, part in zip(total, product_of_batch(k), strict=True):
            acc.add_(part, alpha=weights[k])
    return total


class MeanLossOperator(CurvatureOperator):
    r"""A curvature matrix of the mean loss of ``model`` over ``batches``, by parameters.

    Args:
        model: Any module; it is left in its original train/eval mode and receives no
            ``.grad``. With ``dtype`` different from the model's, a converted copy is used.
        loss_fn: ``loss_fn(outputs, targets)`` returning the *mean* loss of a batch.
        batches: ``(inputs, targets)`` pairs; kept in memory on the model's device
            (inputs may be tensors or dicts/lists of tensors).
        params: Parameter names or tensors (default: all trainable parameters); the
            operator is the block of those parameters, the others held fixed.
        dtype: Compute dtype (default: the model's); ``torch.float64`` for references.
        bn_mode: ``"eval"`` uses BatchNorm running statistics; ``"train"`` uses each
            batch's own statistics (the running statistics of ``model`` are not updated).

    Attributes:
        names: The selected parameters, in model order; vectors are laid out in it.
        params: Those parameters (of the converted copy when ``dtype`` differs).
        batches: The batches, on the model's device, floating tensors in ``dtype``.
        weights: :math:`n_k / N` per batch (:func:`batch_weight`: examples, or the
            tokens a token loss counts).
        num_examples: Examples over all batches.
        num_counted: :math:`N`, what the mean is over: ``num_examples``, or the counted
            tokens of a token loss.
        loss: The mean loss at the weights (finite, or the constructor raised).
        hvp: How products are computed, for reports (``"double_backward"``,
            ``"ggn/cross_entropy"``, ...).
    """

    hvp: str

    @in_analysis_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: ParameterSelection = None,
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
    ) -> None:
        self.bn_mode = check_bn_mode(bn_mode)
        self.names = select_parameters(model, params)
        model, dtype, device = model_in_dtype(model, dtype)
        self.model, self.loss_fn = model, loss_fn
        named = dict(model.named_parameters())
        self.params = [named[name] for name in self.names]
        super().__init__(sum(p.numel() for p in self.params), dtype, device)
        self.batches = [move_batch(b, device, dtype) for b in batches]
        self.weights = batch_weights(self.batches, loss_fn)
        self.num_examples = sum(batch_size(b) for b in self.batches)
        self.num_counted = sum(batch_weight(loss_fn, b) for b in self.batches)
        self.budget: GraphBudget | None = None
        """Which batches keep their graphs, where a subclass keeps any (:class:`GraphBudget`)."""

    @property
    def graph_bytes(self) -> int:
        """Bytes the kept graphs hold (their saved tensors, parameters excluded)."""
        return self.budget.kept_bytes if self.budget is not None else 0

    @property
    def kept_examples(self) -> int:
        """Examples whose graphs are kept; the rest are rebuilt for every product."""
        return self.budget.kept_examples if self.budget is not None else 0

    # -- the model's tensors for functional_call -----------------------------------------

    def functional_tensors(self, selected: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """:func:`functional_tensors` of the model, by default with the live parameters.

        Without ``selected`` the selected parameters themselves are used (for autograd).
        """
        live = selected or dict(zip(self.names, self.params, strict=True))
        return functional_tensors(self.model, self.bn_mode, live)

    # -- flat vectors <-> per-parameter tensors --------------------------------------------

    def split(self, V: Tensor) -> list[Tensor]:
        """Columns of ``V`` ``(dim, b)`` as one ``(b, *param.shape)`` tensor per parameter."""
        b = V.shape[1]
        rows = V.T.contiguous()
        chunks = rows.split([p.numel() for p in self.params], dim=1)
        return [c.view(b, *p.shape) for c, p in zip(chunks, self.params, strict=True)]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        """The inverse of :meth:`split`: per-parameter ``(b, *shape)`` tensors to ``(dim, b)``."""
        b = parts[0].shape[0]
        return torch.cat([part.reshape(b, -1) for part in parts], dim=1).T

    # -- products --------------------------------------------------------------------------

    @abstractmethod
    def batch_product(self, k: int, V: list[Tensor]) -> list[Tensor]:
        """:math:`A_k V` of batch ``k`` (unweighted), ``V`` as :meth:`split` lays it out."""

    def local_product(self, V: list[Tensor]) -> list[Tensor]:
        """The size-weighted sum of :meth:`batch_product` over this operator's batches."""
        return weighted_sum(lambda k: self.batch_product(k, V), self.weights)

    def _matmat(self, V: Tensor) -> Tensor:
        return self.join(self.local_product(self.split(V)))

    # -- the loss and its gradient ---------------------------------------------------------

    def batch_gradient(self, k: int, create_graph: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Loss of batch ``k`` (detached) and its gradient w.r.t. the selected parameters."""
        twice = twice_differentiable() if create_graph else contextlib.nullcontext()
        with torch.enable_grad(), analysis_mode(self.model, self.bn_mode), twice:
            loss = batch_loss(self.model, self.loss_fn, self.functional_tensors(), self.batches[k])
            gradient = torch.autograd.grad(
                loss, self.params, create_graph=create_graph, allow_unused=True
            )
        parts = [
            torch.zeros_like(p) if g is None else g
            for g, p in zip(gradient, self.params, strict=True)
        ]
        return loss.detach(), parts

    def gradient(self) -> Tensor:
        """The flat gradient of the mean loss (not counted as a product)."""
        parts = weighted_sum(lambda k: self.batch_gradient(k)[1], self.weights)
        return torch.cat([g.reshape(-1) for g in parts])

    def initial_loss(self) -> float:
        """The mean loss at the weights, checked to be finite."""
        return mean_loss(self.model, self.loss_fn, self.batches, self.bn_mode)
