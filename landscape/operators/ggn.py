r"""The generalized Gauss-Newton (GGN) matrix of a model's mean loss, and the Hessian's rest.

For batches :math:`B_k` of sizes :math:`n_k` (:math:`N = \sum_k n_k`), network outputs
:math:`z_k = f(x_k; \theta)` and a loss returning the batch mean :math:`\ell_k(z_k, y_k)`,
the Hessian of :math:`L(\theta) = \sum_k \frac{n_k}{N} \ell_k` splits by the chain rule into

.. math::
    H = \underbrace{\sum_k \frac{n_k}{N} J_k^\top \, \nabla^2_{z} \ell_k \, J_k}_{G
        \text{ (GGN)}}
      + \underbrace{\sum_k \frac{n_k}{N} \sum_{i} \frac{\partial \ell_k}{\partial z_{k,i}}
        \nabla^2_\theta z_{k,i}}_{R \text{ (residual)}},

with :math:`J_k = \partial z_k / \partial \theta`. :math:`G` keeps the curvature of the
loss *in output space* and drops the curvature of the network itself. For a convex loss
(cross-entropy, squared error) :math:`\nabla^2_z \ell` is positive semi-definite, so
:math:`G` is too; :math:`R` is weighted by the output gradients, which vanish where the
model fits its targets, and it is zero for a model linear in :math:`\theta`.

For cross-entropy on logits :math:`z` with softmax :math:`p`, each example contributes
the softmax covariance :math:`\operatorname{diag}(p) - p p^\top` (divided by the number of
examples of the batch): the covariance of the one-hot label under the model's own
predictive distribution. It scales with :math:`p_i(1 - p_i)`, so a saturated softmax
makes :math:`G` small whatever the network's shape; this is the confidence confound that
temperature matching (:mod:`landscape.curvature.temperature`) removes.

Products never form :math:`J`: :math:`J v` is a reverse-over-reverse product (the
gradient of :math:`u \mapsto J^\top u` with respect to a dummy :math:`u`), the output
Hessian acts on it in closed form (cross-entropy) or by double backward (any other
loss), and :math:`J^\top w` is one more backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_size,
    call_model,
    in_analysis_mode,
    model_outputs,
)
from landscape.errors import LandscapeInputError
from landscape.operators.base import DifferenceOperator
from landscape.operators.batching import index_examples
from landscape.operators.double_backward import twice_differentiable
from landscape.operators.hessian import HessianOperator
from landscape.operators.mean_loss import MeanLossOperator, ParameterSelection
from landscape.operators.memory import GraphBudget, SavedBytes

OutputHessian = Callable[[Tensor, Tensor, Tensor], Tensor]
OUTPUT_HESSIANS = ("auto", "cross_entropy", "autograd")

PRODUCT_RESERVE = 3.0
"""Working memory of one GGN product beside the kept linearizations, in linearizations of
the largest batch (rebuilding one and back-propagating through it twice); see
:data:`landscape.operators.hessian.PRODUCT_RESERVE` and ``bench/memory.py --operator ggn``."""


def cross_entropy_output_hessian(logits: Tensor, targets: Tensor, U: Tensor) -> Tensor:
    r"""Products of the Hessian of the *mean* cross-entropy w.r.t. the logits.

    For :math:`M` predictions (examples times spatial positions) with class axis 1,

    .. math::
        \nabla^2_z \ell \, u = \frac{1}{M} \left(p \odot u - p \, (p^\top u)\right)
        \quad \text{per prediction}, \qquad p = \operatorname{softmax}(z).

    The result does not depend on the (class-index) targets.

    Args:
        logits: ``(n, C, ...)`` outputs of one batch.
        targets: Unused; present for the common signature.
        U: ``(b, n, C, ...)``: ``b`` output-space vectors.

    Example:
        >>> z = torch.tensor([[0.0, 0.0]])
        >>> cross_entropy_output_hessian(z, None, torch.tensor([[[1.0, 0.0]]])).tolist()
        [[[0.25, -0.25]]]
    """
    del targets
    p = torch.softmax(logits, dim=1)
    predictions = logits.numel() // logits.shape[1]
    return (p * U - p * (p * U).sum(dim=2, keepdim=True)) / predictions


def autograd_output_hessian(loss_fn: LossFunction) -> OutputHessian:
    """Output-Hessian products of any twice differentiable loss, by double backward."""

    def products(outputs: Tensor, targets: Tensor, U: Tensor) -> Tensor:
        z = outputs.detach().requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(loss_fn(z, targets), z, create_graph=True)
        if not gradient.requires_grad:  # the loss is linear in the outputs
            return torch.zeros_like(U)
        b = U.shape[0]
        (hu,) = torch.autograd.grad(
            gradient, z, grad_outputs=U if b > 1 else U[0], is_grads_batched=b > 1
        )
        return hu if b > 1 else hu[None]

    return products


def is_plain_cross_entropy(loss_fn: LossFunction) -> bool:
    """Whether ``loss_fn`` is mean cross-entropy on logits without class weights."""
    if loss_fn is nn.functional.cross_entropy:
        return True
    return (
        isinstance(loss_fn, nn.CrossEntropyLoss)
        and loss_fn.weight is None
        and loss_fn.reduction == "mean"
        and loss_fn.label_smoothing == 0.0
    )


def resolve_output_hessian(
    loss_fn: LossFunction, output_hessian: str | OutputHessian, batches: Sequence[Batch]
) -> tuple[OutputHessian, str]:
    """The output-Hessian product to use, and its name for reports.

    ``"auto"`` picks the closed form for plain mean cross-entropy with class-index
    targets that are all valid (no ``ignore_index``), and double backward otherwise.
    """
    if callable(output_hessian):
        return output_hessian, getattr(output_hessian, "__name__", "custom")
    if output_hessian not in OUTPUT_HESSIANS:
        raise LandscapeInputError(
            f"output_hessian {output_hessian!r}: choose one of {', '.join(OUTPUT_HESSIANS)} "
            "or pass a function (outputs, targets, U) -> products"
        )
    closed_form_ok = is_plain_cross_entropy(loss_fn) and all(
        not y.is_floating_point() and y.numel() > 0 and int(y.min()) >= 0 for _, y in batches
    )
    if output_hessian == "cross_entropy" or (output_hessian == "auto" and closed_form_ok):
        return cross_entropy_output_hessian, "cross_entropy"
    return autograd_output_hessian(loss_fn), "autograd"


class _Linearization:
    r"""One batch's outputs with the graphs for :math:`J v` and :math:`J^\\top w`."""

    def __init__(self, outputs: Tensor, params: Sequence[Tensor]) -> None:
        self.outputs = outputs
        self.params = list(params)
        self.dummy = torch.zeros_like(outputs, requires_grad=True)
        vjp = torch.autograd.grad(
            outputs, self.params, grad_outputs=self.dummy, create_graph=True, allow_unused=True
        )
        self.live = [i for i, g in enumerate(vjp) if g is not None and g.requires_grad]
        self.vjp = [vjp[i] for i in self.live]

    def jvp(self, V: list[Tensor]) -> Tensor:
        """:math:`J v_j` for ``b`` vectors, shape ``(b, *outputs.shape)``."""
        b = V[0].shape[0]
        if not self.live:
            return self.outputs.new_zeros((b, *self.outputs.shape))
        (jv,) = torch.autograd.grad(
            self.vjp,
            self.dummy,
            grad_outputs=[V[i] if b > 1 else V[i][0] for i in self.live],
            retain_graph=True,
            is_grads_batched=b > 1,
        )
        return jv if b > 1 else jv[None]

    def vjp_of(self, W: Tensor) -> list[Tensor]:
        r""":math:`J^\\top w_j` for ``b`` output-space vectors, one tensor per parameter."""
        b = W.shape[0]
        products = torch.autograd.grad(
            self.outputs,
            self.params,
            grad_outputs=W if b > 1 else W[0],
            retain_graph=True,
            is_grads_batched=b > 1,
            allow_unused=True,
        )
        return [
            p.new_zeros((b, *p.shape)) if g is None else (g if b > 1 else g[None])
            for g, p in zip(products, self.params, strict=True)
        ]


class GGNOperator(MeanLossOperator):
    r"""Generalized Gauss-Newton matrix of the mean loss of ``model`` over ``batches``.

    Same data, weighting, parameter selection and BatchNorm handling as
    :class:`~landscape.operators.hessian.HessianOperator` (both are
    :class:`~landscape.operators.mean_loss.MeanLossOperator`), so the two are directly
    comparable and every eigen/trace/density estimator runs on either.

    Args:
        model: Any module returning a tensor; left in its train/eval mode, no ``.grad``.
        loss_fn: ``loss_fn(outputs, targets)`` returning the *mean* loss of a batch.
        batches: ``(inputs, targets)`` pairs.
        params: Parameter names or tensors (default: all trainable parameters).
        output_hessian: ``"auto"``, ``"cross_entropy"`` (softmax covariance, closed
            form), ``"autograd"`` (double backward through ``loss_fn`` w.r.t. the
            outputs), or a function ``(outputs, targets, U) -> products`` where ``U`` has
            shape ``(b, *outputs.shape)``.
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"``, as for the Hessian.
        keep_graphs: Keep every batch's linearization (outputs and the graphs for
            :math:`J v`, :math:`J^\top w`) for all products; default: only with one batch.
        graph_budget: Bytes the kept linearizations may hold (default: no limit). Each is
            measured as it is built; those beyond the budget, beside a product's working
            memory (:data:`PRODUCT_RESERVE` of the largest batch's), are rebuilt at every
            product. A budget too small for one product raises
            :class:`~landscape.errors.LandscapeInputError` with the numbers.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Linear(3, 2).double()
        >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
        >>> G = GGNOperator(model, nn.functional.cross_entropy, [(x, y)])
        >>> H = HessianOperator(model, nn.functional.cross_entropy, [(x, y)])
        >>> torch.allclose(G.to_dense(), H.to_dense())  # linear model: H is its GGN
        True
    """

    @in_analysis_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: ParameterSelection = None,
        output_hessian: str | OutputHessian = "auto",
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
        keep_graphs: bool | None = None,
        graph_budget: int | None = None,
    ) -> None:
        super().__init__(model, loss_fn, batches, params, dtype, bn_mode)
        self.output_hessian, self.output_hessian_name = resolve_output_hessian(
            loss_fn, output_hessian, self.batches
        )
        self.hvp = f"ggn/{self.output_hessian_name}"
        keep = len(self.batches) == 1 if keep_graphs is None else keep_graphs
        self.graph_budget = graph_budget
        largest = max(batch_size(b) for b in self.batches)
        self.budget = GraphBudget(
            graph_budget, largest, PRODUCT_RESERVE, "linearization", self._small_graph_bytes
        )
        """Which batches keep their linearizations (:class:`GraphBudget`)."""
        self._kept = [self._kept_linearization(b) for b in self.batches] if keep else None
        self.loss = self.initial_loss()

    @property
    def graphs_kept(self) -> bool:
        """Whether products reuse kept linearizations (all or some of the batches')."""
        return self._kept is not None and any(k is not None for k in self._kept)

    def _small_graph_bytes(self) -> tuple[int, int]:
        """Examples and bytes of the linearization of the first two examples (then freed)."""
        inputs, targets = self.batches[0]
        small = (index_examples(inputs, slice(0, 2)), targets[:2])
        with SavedBytes(self.params) as saved:
            self._linearize(small)
        return batch_size(small), saved.bytes

    def _kept_linearization(self, batch: Batch) -> _Linearization | None:
        """The batch's linearization if the budget has room for it, else None."""
        n = batch_size(batch)
        if not self.budget.room_for(n):
            return None
        with SavedBytes(self.params) as saved:
            linear = self._linearize(batch)
        return linear if self.budget.admit(saved.bytes, n) else None

    def _linearize(self, batch: Batch) -> _Linearization:
        mode = analysis_mode(self.model, self.bn_mode)
        with torch.enable_grad(), mode, twice_differentiable():
            outputs = model_outputs(call_model(self.model, batch[0], self.functional_tensors()))
            return _Linearization(outputs, self.params)

    def _linearization(self, k: int) -> _Linearization:
        kept = self._kept[k] if self._kept is not None else None
        return kept if kept is not None else self._linearize(self.batches[k])

    def batch_product(self, k: int, V: list[Tensor]) -> list[Tensor]:
        r""":math:`J_k^\top \nabla^2_z \ell_k J_k V` of batch ``k`` (unweighted)."""
        with twice_differentiable():
            linear = self._linearization(k)
            JV = linear.jvp(V)
        HJV = self.output_hessian(linear.outputs.detach(), self.batches[k][1], JV)
        return linear.vjp_of(HJV)


def residual_operator(hessian: HessianOperator, ggn: GGNOperator) -> DifferenceOperator:
    r"""The residual :math:`R = H - G`: the network's own curvature weighted by output gradients."""
    if hessian.names != ggn.names or hessian.num_examples != ggn.num_examples:
        raise LandscapeInputError(
            "the Hessian and the GGN must be taken over the same parameters and data"
        )
    return DifferenceOperator(hessian, ggn)
