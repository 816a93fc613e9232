r"""The Hessian of a model's mean loss over a fixed list of batches, as a linear operator.

For batches :math:`B_1, \dots, B_K` of sizes :math:`n_1, \dots, n_K` with :math:`N = \sum_k n_k`
and a loss function returning the *mean* loss :math:`\ell_k(\theta)` of batch :math:`k`,

.. math::
    L(\theta) = \sum_k \frac{n_k}{N} \ell_k(\theta), \qquad
    H v = \sum_k \frac{n_k}{N} \nabla^2_\theta \ell_k(\theta)\, v ,

so the operator is the Hessian of the mean loss over all :math:`N` examples, whatever the
batch sizes. Two pieces are kept apart on purpose: the HVP of *one* batch
(:func:`double_backward_hvp`, :func:`forward_over_reverse_hvp`) and the weighted sum over
batches (:func:`weighted_sum`); a data-parallel operator only adds an all-reduce of the sum.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

from landscape.errors import LandscapeInputError
from landscape.operator import CurvatureOperator

Batch = tuple[Any, Tensor]
LossFunction = Callable[[Tensor, Tensor], Tensor]

ENGINES = ("double_backward", "forward_over_reverse", "auto")
BN_MODES = ("eval", "train")


def select_parameters(
    model: nn.Module, params: Sequence[str] | Sequence[nn.Parameter] | None
) -> list[str]:
    """Names of the parameters the Hessian is taken over (all trainable ones by default)."""
    named = dict(model.named_parameters())
    if params is None:
        names = [name for name, p in named.items() if p.requires_grad]
    elif all(isinstance(p, str) for p in params):
        names = list(params)
        unknown = [name for name in names if name not in named]
        if unknown:
            raise LandscapeInputError(
                f"params: {unknown[0]!r} is not a parameter of the model; "
                f"choose from {sorted(named)[:5]}..."
            )
    else:
        by_id = {id(p): name for name, p in named.items()}
        if any(id(p) not in by_id for p in params):
            raise LandscapeInputError("params: a tensor given is not a parameter of the model")
        names = [by_id[id(p)] for p in params]
    if not names:
        raise LandscapeInputError("params: the model has no trainable parameters")
    return names


def batch_size(batch: Batch) -> int:
    """Number of examples in ``(inputs, targets)``, read from the targets' first axis."""
    return int(batch[1].shape[0])


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """Weights :math:`n_k / N` that turn per-batch mean losses into the overall mean."""
    sizes = [batch_size(b) for b in batches]
    if not sizes or min(sizes) < 1:
        raise LandscapeInputError("batches: need at least one non-empty (inputs, targets) batch")
    total = sum(sizes)
    return [n / total for n in sizes]


def batch_loss(
    model: nn.Module, loss_fn: LossFunction, tensors: dict[str, Tensor], batch: Batch
) -> Tensor:
    """Mean loss of one batch with the model's parameters and buffers replaced by ``tensors``."""
    inputs, targets = batch
    return loss_fn(functional_call(model, tensors, (inputs,)), targets)


def require_finite(loss: float, examples: int) -> float:
    """Return ``loss``, or raise the one-line user error for a NaN/inf loss."""
    if not math.isfinite(loss):
        raise LandscapeInputError(
            f"the loss at these weights is {loss} on the {examples} examples given; "
            "the checkpoint or the inputs contain NaN/inf or diverged values"
        )
    return loss


def mean_loss(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], bn_mode: str = "eval"
) -> float:
    """Size-weighted mean loss over the batches, without gradients; must be finite.

    The model's running statistics are not updated, even with ``bn_mode="train"``.
    """
    weights = batch_weights(batches)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad(), analysis_mode(model, bn_mode):
        losses = [float(batch_loss(model, loss_fn, buffers, batch)) for batch in batches]
    value = sum(w * v for w, v in zip(weights, losses, strict=True))
    return require_finite(value, sum(batch_size(b) for b in batches))


def double_backward_hvp(
    gradient: Sequence[Tensor], params: Sequence[Tensor], V: list[Tensor], retain_graph: bool
) -> list[Tensor]:
    r"""HVPs of one batch by reverse-over-reverse: :math:`\nabla_\theta (g^\top v)`.

    Args:
        gradient: :math:`g = \nabla_\theta \ell`, computed with ``create_graph=True``.
        params: The tensors :math:`\theta` the gradient was taken with respect to.
        V: One tensor per parameter of shape ``(b, *param.shape)``: ``b`` vectors.
        retain_graph: Keep the gradient's graph for further products (single batch).

    Returns:
        :math:`H v_j` for each of the ``b`` vectors, in the layout of ``V``.
    """
    b = V[0].shape[0]
    live = [i for i, g in enumerate(gradient) if g.requires_grad]
    if not live:
        return [torch.zeros_like(v) for v in V]
    outputs = [gradient[i] for i in live]
    grad_outputs = [V[i] if b > 1 else V[i][0] for i in live]
    products = torch.autograd.grad(
        outputs,
        list(params),
        grad_outputs=grad_outputs,
        retain_graph=retain_graph,
        is_grads_batched=b > 1,
        allow_unused=True,
    )
    return [
        torch.zeros_like(v) if hv is None else (hv if b > 1 else hv[None])
        for hv, v in zip(products, V, strict=True)
    ]


def forward_over_reverse_hvp(
    loss_of: Callable[[dict[str, Tensor]], Tensor],
    primals: dict[str, Tensor],
    V: dict[str, Tensor],
) -> dict[str, Tensor]:
    r"""HVPs of one batch by forward-over-reverse: the JVP of :math:`\nabla_\theta \ell`.

    Args:
        loss_of: Maps the selected parameters (by name) to the batch's mean loss.
        primals: The point :math:`\theta`, by name, detached.
        V: Tangents by name, each of shape ``(b, *param.shape)``.
    """

    # jacrev, not grad: grad's backward of mse_loss writes into a ZeroTensor under jvp
    # (torch 2.13: "ZeroTensors are immutable").
    def hvp(tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        return jvp(jacrev(loss_of), (primals,), (tangent,))[1]

    if next(iter(V.values())).shape[0] == 1:
        return {name: hv[None] for name, hv in hvp({k: v[0] for k, v in V.items()}).items()}
    return vmap(hvp)(V)


def weighted_sum(
    hvp_of_batch: Callable[[int], list[Tensor]], weights: Sequence[float]
) -> list[Tensor]:
    r""":math:`\sum_k w_k H_k V` over the batches, one batch's HVP alive at a time."""
    total = [weights[0] * hv for hv in hvp_of_batch(0)]  # out of place: hv may alias V
    for k in range(1, len(weights)):
        for acc, hv in zip(total, hvp_of_batch(k), strict=True):
            acc.add_(hv, alpha=weights[k])
    return total


@contextmanager
def analysis_mode(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """Put the model in eval mode (BatchNorm layers in train mode if asked), then restore."""
    saved = [(module, module.training) for module in model.modules()]
    model.eval()
    if bn_mode == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


def _move_batch(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    def move(x: Any) -> Any:
        if isinstance(x, Tensor):
            return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
        return x

    inputs, targets = batch
    return move(inputs), move(targets)


def bind_problem(
    operator: CurvatureOperator,
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    params: Sequence[str] | Sequence[nn.Parameter] | None,
    dtype: torch.dtype | None,
    bn_mode: str,
) -> None:
    """Set up what every curvature operator of a mean loss holds, and its dimension.

    The model (a converted copy when ``dtype`` differs from its own), the loss, the
    selected parameters, the batches on the model's device in ``dtype``, their size
    weights and the example count; then ``CurvatureOperator.__init__``.
    """
    names = select_parameters(model, params)
    first = next(iter(model.parameters()))
    dtype = dtype or first.dtype
    if dtype != first.dtype:
        model = copy.deepcopy(model).to(dtype)
    operator.model, operator.loss_fn, operator.bn_mode = model, loss_fn, bn_mode
    operator.names = names
    named = dict(model.named_parameters())
    operator.params = [named[name] for name in names]
    operator.batches = [_move_batch(b, first.device, dtype) for b in batches]
    operator.weights = batch_weights(operator.batches)
    operator.num_examples = sum(batch_size(b) for b in operator.batches)
    CurvatureOperator.__init__(
        operator, sum(p.numel() for p in operator.params), dtype, first.device
    )


class HessianOperator(CurvatureOperator):
    r"""Hessian of the mean loss of ``model`` over ``batches``, w.r.t. the selected parameters.

    Args:
        model: Any module; it is left in its original train/eval mode and receives no
            ``.grad``. With ``dtype`` different from the model's, a converted copy is used.
        loss_fn: ``loss_fn(outputs, targets)`` returning the *mean* loss of a batch.
        batches: ``(inputs, targets)`` pairs; kept in memory on the model's device.
        params: Parameter names or parameter tensors (default: all trainable parameters).
        engine: ``"double_backward"`` (reverse-over-reverse), ``"forward_over_reverse"``
            (``torch.func``), or ``"auto"`` (times both on the first product, keeps the
            faster). With a single batch, double backward builds the gradient's graph once
            and reuses it for every product.
        dtype: Compute dtype (default: the model's); ``torch.float64`` for references.
        bn_mode: ``"eval"`` uses BatchNorm running statistics; ``"train"`` uses each
            batch's own statistics (the running statistics of ``model`` are not updated).
        keep_graphs: Build every batch's gradient graph once and reuse it for every
            double-backward product (~1 gradient less per batch and product); the memory
            is that of one batch holding all the examples. Default: only with one batch.
            Several kept batches are how a large set is measured fastest on a CPU, where
            one huge batch runs slower per example (:func:`landscape.batching.product_batches`).

    Raises:
        LandscapeInputError: on an empty batch list, unknown parameters or options, or a
            loss that is not finite at the given weights.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Linear(3, 1)
        >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        >>> H = HessianOperator(model, nn.functional.mse_loss, [(x, y)], dtype=torch.float64)
        >>> X = torch.cat([x, torch.ones(8, 1, dtype=torch.float64)], dim=1)
        >>> torch.allclose(H.to_dense(), 2 * X.T @ X / 8)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: Sequence[str] | Sequence[nn.Parameter] | None = None,
        engine: str = "double_backward",
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
        keep_graphs: bool | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise LandscapeInputError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
        if bn_mode not in BN_MODES:
            raise LandscapeInputError(f"bn_mode {bn_mode!r}: choose one of {', '.join(BN_MODES)}")
        if engine == "forward_over_reverse" and bn_mode == "train":
            raise LandscapeInputError(
                "engine forward_over_reverse cannot differentiate BatchNorm in train mode "
                "(in-place running-statistics update); use double_backward or bn_mode='eval'"
            )
        self.engine = "double_backward" if engine == "auto" and bn_mode == "train" else engine
        bind_problem(self, model, loss_fn, batches, params, dtype, bn_mode)
        self.keep_graphs = len(self.batches) == 1 if keep_graphs is None else keep_graphs
        self._graphs: list[tuple[Tensor, ...]] | None = None
        self.loss = self._initial_loss()

    # -- tensors handed to functional_call ------------------------------------------------

    def _tensors(self, selected: dict[str, Tensor]) -> dict[str, Tensor]:
        """Selected parameters as given, the other parameters frozen, buffers protected."""
        tensors = {n: p.detach() for n, p in self.model.named_parameters()}
        buffers = dict(self.model.named_buffers())
        if self.bn_mode == "train":  # batch statistics update copies, never the model's
            buffers = {n: b.clone() for n, b in buffers.items()}
        tensors.update(buffers)
        tensors.update(selected)
        return tensors

    def _initial_loss(self) -> float:
        """Mean loss at the weights; with ``keep_graphs`` the gradient graphs are kept."""
        if self.keep_graphs and self.engine != "forward_over_reverse":
            losses, self._graphs = [], []
            for batch in self.batches:
                loss, gradient = self._gradient(batch, create_graph=True)
                losses.append(float(loss))
                self._graphs.append(gradient)
            value = sum(w * v for w, v in zip(self.weights, losses, strict=True))
            return require_finite(value, self.num_examples)
        return mean_loss(self.model, self.loss_fn, self.batches, self.bn_mode)

    def _gradient(self, batch: Batch, create_graph: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Loss and gradient of one batch w.r.t. the selected parameters."""
        selected = dict(zip(self.names, self.params, strict=True))
        with analysis_mode(self.model, self.bn_mode):
            loss = batch_loss(self.model, self.loss_fn, self._tensors(selected), batch)
        gradient = torch.autograd.grad(
            loss, self.params, create_graph=create_graph, allow_unused=True
        )
        gradient = tuple(
            torch.zeros_like(p) if g is None else g
            for g, p in zip(gradient, self.params, strict=True)
        )
        return loss.detach(), gradient

    def gradient(self) -> Tensor:
        """The flat gradient of the mean loss (free with kept graphs; not counted)."""
        if self._graphs is not None:
            graphs = self._graphs
            parts = weighted_sum(lambda k: [g.detach() for g in graphs[k]], self.weights)
        else:
            parts = weighted_sum(
                lambda k: list(self._gradient(self.batches[k], create_graph=False)[1]),
                self.weights,
            )
        return torch.cat([g.reshape(-1) for g in parts])

    # -- products ---------------------------------------------------------------------------

    def _batch_hvp(self, k: int, V: list[Tensor], engine: str) -> list[Tensor]:
        """HVPs of batch ``k`` (unweighted) for the vectors ``V``."""
        if engine == "forward_over_reverse":
            batch = self.batches[k]
            primals = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}

            def loss_of(selected: dict[str, Tensor]) -> Tensor:
                return batch_loss(self.model, self.loss_fn, self._tensors(selected), batch)

            with analysis_mode(self.model, self.bn_mode):
                out = forward_over_reverse_hvp(
                    loss_of, primals, dict(zip(self.names, V, strict=True))
                )
            return [out[n] for n in self.names]
        if self._graphs is not None:
            return double_backward_hvp(self._graphs[k], self.params, V, retain_graph=True)
        _, gradient = self._gradient(self.batches[k], create_graph=True)
        return double_backward_hvp(gradient, self.params, V, retain_graph=False)

    def _local_matmat(self, V: list[Tensor], engine: str) -> list[Tensor]:
        """Weighted sum over this process's batches (a data-parallel subclass all-reduces it)."""
        return weighted_sum(lambda k: self._batch_hvp(k, V, engine), self.weights)

    def _matmat(self, V: Tensor) -> Tensor:
        b = V.shape[1]
        rows = V.T.contiguous()
        split = [
            chunk.view(b, *p.shape)
            for chunk, p in zip(
                rows.split([p.numel() for p in self.params], dim=1), self.params, strict=True
            )
        ]
        if self.engine == "auto":
            products = self._choose_engine(split)
        else:
            products = self._local_matmat(split, self.engine)
        return torch.cat([hv.reshape(b, -1) for hv in products], dim=1).T

    def _choose_engine(self, V: list[Tensor]) -> list[Tensor]:
        """Time both engines on the same product, keep the faster; both products are counted."""
        seconds = {}
        for engine in ("double_backward", "forward_over_reverse"):
            start = time.perf_counter()
            products = self._local_matmat(V, engine)
            seconds[engine] = time.perf_counter() - start
        self.engine = min(seconds, key=seconds.get)
        self.engine_seconds = seconds
        self._count(V[0].shape[0])
        if self.engine == "forward_over_reverse":
            self._graphs = None
        return products
