r"""The Hessian of a model's mean loss over fixed batches, as a linear operator.

:math:`H v = \sum_k \frac{n_k}{N} \nabla^2_\theta \ell_k(\theta)\, v` over batches of sizes
:math:`n_k` (:mod:`landscape.operators.mean_loss` holds the data, the weights and the
loss). This module holds only the product of *one* batch, by two engines: double backward
(:func:`double_backward_hvp`, reverse-over-reverse) and forward-over-reverse
(:func:`forward_over_reverse_hvp`, ``torch.func``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from landscape._types import Batch, LossFunction, analysis_mode, batch_size, in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.operators.batching import index_examples
from landscape.operators.double_backward import twice_differentiable
from landscape.operators.mean_loss import (
    MeanLossOperator,
    ParameterSelection,
    batch_loss,
    require_finite,
    weighted_sum,
)
from landscape.operators.memory import GraphBudget, SavedBytes

HVPS = ("double_backward", "forward_over_reverse", "auto")


PRODUCT_RESERVE = 3.0
"""Working memory of one product beside the kept graphs, in graphs of the largest batch
(rebuilding a batch's graph and back-propagating through it). Measured by
``bench/memory.py``: resnet20 at 2048 examples peaked at 8.34 GiB RSS with 5.94 GiB of
kept graphs in 256-example batches of 0.74 GiB, and at 5.36 GiB with 2.97 GiB kept: about
2.4 GiB beyond the graphs, of which some 0.5 GiB is the process before any graph, so
about 2.6 batch graphs; 3 leaves a margin."""


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
    loss_of: Callable[[dict[str, Tensor], Tensor], Tensor],
    primals: dict[str, Tensor],
    V: dict[str, Tensor],
    targets: Tensor,
) -> dict[str, Tensor]:
    r"""HVPs of one batch by forward-over-reverse: the JVP of :math:`\nabla_\theta \ell`.

    Args:
        loss_of: Maps the selected parameters (by name) and the targets to the batch's
            mean loss.
        primals: The point :math:`\theta`, by name, detached.
        V: Tangents by name, each of shape ``(b, *param.shape)``.
        targets: The batch's targets. Floating-point targets enter the JVP as primals
            with a materialized zero tangent: as closed-over constants, their implicit
            zero tangent makes ``mse_loss``'s backward write into an immutable
            ``ZeroTensor`` (torch 2.13).

    ``torch.func.grad``, not ``jacrev``: ``jvp(jacrev(f))`` of ``layer_norm`` is wrong in
    torch 2.13 (its vmap over the output basis; ``tests/landscape/cases.py`` holds the
    LayerNorm case that caught it), while ``jvp(grad(f))`` matches double backward and
    finite differences.
    """
    floating = targets.is_floating_point()

    def hvp(tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        if floating:
            zero = torch.zeros_like(targets)
            return jvp(grad(loss_of), (primals, targets), (tangent, zero))[1]
        return jvp(grad(lambda selected: loss_of(selected, targets)), (primals,), (tangent,))[1]

    if next(iter(V.values())).shape[0] == 1:
        return {name: hv[None] for name, hv in hvp({k: v[0] for k, v in V.items()}).items()}
    return vmap(hvp)(V)


class HessianOperator(MeanLossOperator):
    r"""Hessian of the mean loss of ``model`` over ``batches``, w.r.t. the selected parameters.

    Args:
        model: Any module; it is left in its original train/eval mode and receives no
            ``.grad``. With ``dtype`` different from the model's, a converted copy is used.
        loss_fn: ``loss_fn(outputs, targets)`` returning the *mean* loss of a batch.
        batches: ``(inputs, targets)`` pairs; kept in memory on the model's device.
        params: Parameter names or parameter tensors (default: all trainable parameters).
        hvp: ``"double_backward"`` (reverse-over-reverse), ``"forward_over_reverse"``
            (``torch.func``), or ``"auto"`` (times both on the first product, keeps the
            faster).
        dtype: Compute dtype (default: the model's); ``torch.float64`` for references.
        bn_mode: ``"eval"`` uses BatchNorm running statistics; ``"train"`` uses each
            batch's own statistics (the running statistics of ``model`` are not updated).
        keep_graphs: Build every batch's gradient graph once and reuse it for every
            double-backward product (~1 gradient less per batch and product); the memory
            is that of one batch holding all the examples. Default: only with one batch.
            Several kept batches are how a large set is measured fastest on a CPU, where
            one huge batch runs slower per example
            (:func:`landscape.operators.batching.curvature_batches`).

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

    @in_analysis_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: ParameterSelection = None,
        hvp: str = "double_backward",
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
        keep_graphs: bool | None = None,
        graph_budget: int | None = None,
    ) -> None:
        if hvp not in HVPS:
            raise LandscapeInputError(f"hvp {hvp!r}: choose one of {', '.join(HVPS)}")
        if hvp == "forward_over_reverse" and bn_mode == "train":
            raise LandscapeInputError(
                "hvp forward_over_reverse cannot differentiate BatchNorm in train mode "
                "(in-place running-statistics update); use double_backward or bn_mode='eval'"
            )
        super().__init__(model, loss_fn, batches, params, dtype, bn_mode)
        self.hvp = "double_backward" if hvp == "auto" and bn_mode == "train" else hvp
        self.keep_graphs = len(self.batches) == 1 if keep_graphs is None else keep_graphs
        self.graph_budget = graph_budget
        largest = max(batch_size(batch) for batch in self.batches)
        self.budget = GraphBudget(
            graph_budget, largest, PRODUCT_RESERVE, "gradient graph", self._small_graph_bytes
        )
        """Which batches keep their gradient graphs (:class:`GraphBudget`)."""
        self._graphs: list[list[Tensor] | None] | None = None
        self.loss = self.initial_loss()

    @property
    def graphs_kept(self) -> bool:
        """Whether products reuse kept gradient graphs (double backward with keep_graphs)."""
        return self._graphs is not None and any(g is not None for g in self._graphs)

    def initial_loss(self) -> float:
        """Mean loss at the weights; with ``keep_graphs`` the gradient graphs are kept.

        Within ``graph_budget`` only: each batch's graph is measured as it is built (the
        bytes of the tensors autograd saves, parameters excluded); the kept graphs plus
        a product's working memory (:data:`PRODUCT_RESERVE` graphs of the largest batch)
        stay within it. Batches that would cross it keep none and are rebuilt at every
        product. A budget below the working memory alone is an error.
        """
        if not self.keep_graphs or self.hvp == "forward_over_reverse":
            return super().initial_loss()
        losses, self._graphs = [], []
        for k, batch in enumerate(self.batches):
            n = batch_size(batch)
            if self.budget.room_for(n):
                with SavedBytes(self.params) as saved:
                    loss, gradient = self.batch_gradient(k, create_graph=True)
                if not self.budget.admit(saved.bytes, n):
                    gradient = None  # frees the graph
            else:
                loss, gradient = self.batch_gradient(k)[0], None
            losses.append(float(loss))
            self._graphs.append(gradient)
        value = sum(w * v for w, v in zip(self.weights, losses, strict=True))
        return require_finite(value, self.num_examples)

    def _small_graph_bytes(self) -> tuple[int, int]:
        """Examples and bytes of the gradient graph of the first two examples (then freed)."""
        inputs, targets = self.batches[0]
        small = (index_examples(inputs, slice(0, 2)), targets[:2])
        mode = analysis_mode(self.model, self.bn_mode)
        with SavedBytes(self.params) as saved, torch.enable_grad(), mode, twice_differentiable():
            loss = batch_loss(self.model, self.loss_fn, self.functional_tensors(), small)
            torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        return batch_size(small), saved.bytes

    def gradient(self) -> Tensor:
        """The flat gradient of the mean loss (free with kept graphs; not counted)."""
        if self._graphs is None:
            return super().gradient()
        graphs = self._graphs

        def batch(k: int) -> list[Tensor]:
            if graphs[k] is None:
                return self.batch_gradient(k)[1]
            return [g.detach() for g in graphs[k]]

        parts = weighted_sum(batch, self.weights)
        return torch.cat([g.reshape(-1) for g in parts])

    # -- products ---------------------------------------------------------------------------

    def batch_product(self, k: int, V: list[Tensor]) -> list[Tensor]:
        """HVPs of batch ``k`` (unweighted) for the vectors ``V``, with the current engine."""
        return self._batch_hvp(k, V, self.hvp)

    def _batch_hvp(self, k: int, V: list[Tensor], hvp: str) -> list[Tensor]:
        with twice_differentiable():
            return self._batch_hvp_with(k, V, hvp)

    def _batch_hvp_with(self, k: int, V: list[Tensor], hvp: str) -> list[Tensor]:
        if hvp == "forward_over_reverse":
            inputs, targets = self.batches[k]
            primals = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}

            def loss_of(selected: dict[str, Tensor], batch_targets: Tensor) -> Tensor:
                tensors = self.functional_tensors(selected)
                return batch_loss(self.model, self.loss_fn, tensors, (inputs, batch_targets))

            with analysis_mode(self.model, self.bn_mode):
                out = forward_over_reverse_hvp(
                    loss_of, primals, dict(zip(self.names, V, strict=True)), targets
                )
            return [out[n] for n in self.names]
        if self._graphs is not None and self._graphs[k] is not None:
            return double_backward_hvp(self._graphs[k], self.params, V, retain_graph=True)
        _, gradient = self.batch_gradient(k, create_graph=True)
        return double_backward_hvp(gradient, self.params, V, retain_graph=False)

    def local_product(self, V: list[Tensor]) -> list[Tensor]:
        """The weighted sum over the batches; ``hvp="auto"`` picks its engine on the first."""
        if self.hvp == "auto":
            return self._choose_hvp(V)
        return super().local_product(V)

    def _choose_hvp(self, V: list[Tensor]) -> list[Tensor]:
        """Time both engines on the same product, keep the faster; both products are counted."""
        seconds = {}
        for hvp in ("double_backward", "forward_over_reverse"):
            self.hvp = hvp
            start = time.perf_counter()
            products = super().local_product(V)
            seconds[hvp] = time.perf_counter() - start
        self.hvp = min(seconds, key=seconds.get)
        self.hvp_seconds = seconds
        self._count(V[0].shape[0])
        if self.hvp == "forward_over_reverse":
            self._graphs = None
        return products
