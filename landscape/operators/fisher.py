r"""Fisher matrices of a model's mean loss: the Monte-Carlo Fisher and the empirical Fisher.

Both have the GGN's form :math:`\sum_k \frac{n_k}{N} J_k^\top M_k J_k`
(:mod:`landscape.operators.ggn`); only the output-space matrix differs. For a mean loss
:math:`L = \frac{1}{Q} \sum_q \ell_q(z_q, y_q)` over :math:`Q` predictions (examples times
spatial positions; the class axis is 1) write :math:`g = \nabla_z L(z, \hat y)`, so that
:math:`g_q = \nabla \ell_q / Q`. Then

.. math::
    M\,u = \frac{Q}{S} \sum_{s=1}^{S} g^{(s)}_q \, \big(g^{(s)\top}_q u_q\big)
    \quad\text{per prediction } q,

which is :math:`\frac{1}{Q} \sum_q \nabla\ell_q \nabla\ell_q^\top` averaged over the
targets used:

- **Monte-Carlo Fisher** (``kind="mc"``): :math:`\hat y^{(s)}` drawn from the model's own
  predictive distribution at the current weights, ``mc_samples`` times per prediction
  (seeded, drawn once, so the operator is a fixed matrix). For a likelihood whose
  negative log is the loss, :math:`\mathbb{E}[\nabla\ell\,\nabla\ell^\top] = \nabla^2_z \ell`,
  so the MC Fisher is an unbiased estimate of the GGN and tends to it as the samples
  grow. Defined for cross-entropy (categorical) and mean squared error (Gaussian with
  variance C/2 for C entries per prediction: the one whose negative log-likelihood is
  the squared error averaged over those entries).
- **Empirical Fisher** (``kind="empirical"``): the data's own labels, one "sample":
  :math:`\frac{1}{Q}\sum_q \nabla\ell_q(y_q) \nabla\ell_q(y_q)^\top`, the (uncentred)
  covariance of the per-prediction gradients, for any loss. It is not the Fisher and not a
  curvature of the loss (Kunstner et al. 2019); it is measured because optimisers and
  pruning methods use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    call_model,
    in_analysis_mode,
    model_outputs,
)
from landscape.errors import LandscapeInputError
from landscape.operators.ggn import GGNOperator, is_plain_cross_entropy
from landscape.operators.mean_loss import ParameterSelection

KINDS = ("mc", "empirical")
LIKELIHOODS = ("categorical", "gaussian")


def likelihood_of(loss_fn: LossFunction) -> str | None:
    """``"categorical"`` for plain cross-entropy, ``"gaussian"`` for mean squared error.

    Only losses known to be those negative log-likelihoods (up to scale): plain mean
    cross-entropy (no class weights, no label smoothing), torch's mean ``mse_loss``, and
    a loss that declares one of :data:`LIKELIHOODS` in a ``likelihood`` attribute (a mean
    squared error that takes class indices as one-hot targets, say); anything else has
    none.
    """
    declared = getattr(loss_fn, "likelihood", None)
    if declared in LIKELIHOODS:
        return declared
    if is_plain_cross_entropy(loss_fn):
        return "categorical"
    if loss_fn is nn.functional.mse_loss:
        return "gaussian"
    if isinstance(loss_fn, nn.MSELoss) and loss_fn.reduction == "mean":
        return "gaussian"
    return None


def _sample_targets(outputs: Tensor, targets: Tensor, likelihood: str, uniforms: Tensor) -> Tensor:
    """Targets drawn from the model's predictive distribution at ``outputs``.

    ``uniforms`` holds one U(0, 1) number per prediction (categorical) or entry
    (Gaussian), in example order, and is turned into draws by inverse CDF, so the draws
    of an example do not depend on how the examples are batched.
    """
    if likelihood == "categorical":
        classes = outputs.shape[1]
        probs = torch.softmax(outputs.detach().double().movedim(1, -1).reshape(-1, classes), 1)
        cumulative = probs.cumsum(dim=1)
        cumulative[:, -1] = 1.0
        values = uniforms.to(probs.device).contiguous()[:, None]
        draws = torch.searchsorted(cumulative, values).squeeze(1)
        return draws.clamp(max=classes - 1).view(targets.shape).to(targets.device)
    # mean squared error over C entries per prediction: the Gaussian of variance C / 2
    entries = outputs.shape[1] if outputs.ndim > 1 else 1
    normal = torch.special.ndtri(uniforms.clamp(1e-12, 1 - 1e-12)).view(outputs.shape)
    return outputs.detach() + math.sqrt(entries / 2) * normal.to(outputs.device, outputs.dtype)


class FisherOperator(GGNOperator):
    r"""The Monte-Carlo or empirical Fisher of the mean loss of ``model`` over ``batches``.

    Same data, weighting, parameter selection, BatchNorm handling and memory budget as
    :class:`~landscape.operators.ggn.GGNOperator`; see the module docstring for what
    each kind is.

    Args:
        model: Any module returning one tensor of outputs (class axis 1).
        loss_fn: The batch's mean loss; ``kind="mc"`` needs cross-entropy or mse.
        batches: ``(inputs, targets)`` pairs.
        params: Parameter names, globs or tensors (default: all trainable).
        kind: ``"mc"`` or ``"empirical"``.
        mc_samples: Targets drawn per prediction (``kind="mc"``).
        seed: Seed of the draws.
        example_offset: Examples that precede ``batches`` in the whole data set: their
            draws are skipped, so a share of the data gets the draws it has in the whole
            (the data-parallel operator passes each process's offset).
        dtype, bn_mode, keep_graphs, graph_budget: As for the GGN.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Linear(3, 2).double()
        >>> x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
        >>> F = FisherOperator(model, nn.functional.cross_entropy, [(x, y)], kind="empirical")
        >>> G = [torch.autograd.functional.jacobian(
        ...     lambda w, b: nn.functional.cross_entropy(x[i:i + 1] @ w.T + b, y[i:i + 1]),
        ...     (model.weight, model.bias)) for i in range(6)]
        >>> g = torch.stack([torch.cat([gw.reshape(-1), gb]) for gw, gb in G])
        >>> torch.allclose(F.to_dense(), g.T @ g / 6)
        True
    """

    @in_analysis_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        batches: Iterable[Batch],
        params: ParameterSelection = None,
        kind: str = "mc",
        mc_samples: int = 1,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        bn_mode: str = "eval",
        keep_graphs: bool | None = None,
        graph_budget: int | None = None,
        example_offset: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise LandscapeInputError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
        if kind == "mc" and mc_samples < 1:
            raise LandscapeInputError(f"mc_samples {mc_samples}: must be >= 1")
        self.likelihood = likelihood_of(loss_fn)
        if getattr(loss_fn, "count", None) is not None:  # a token loss: logits (N, L, V)
            raise LandscapeInputError(
                "the Fisher takes one prediction per example, and this loss counts tokens; "
                "use the hessian or the ggn for a token loss"
            )
        if kind == "mc" and self.likelihood is None:
            raise LandscapeInputError(
                "the Monte-Carlo Fisher needs a likelihood: cross-entropy (categorical) or "
                "mse (Gaussian); for this loss use the hessian, ggn or empirical-fisher"
            )
        super().__init__(model, loss_fn, batches, params, "autograd", dtype, bn_mode,
                         keep_graphs, graph_budget)  # fmt: skip
        if kind == "mc" and self.likelihood == "categorical":
            soft = [y for _, y in self.batches if y.is_floating_point()]
            if soft:
                raise LandscapeInputError(
                    "the Monte-Carlo Fisher of cross-entropy draws class indices; these "
                    f"targets are {soft[0].dtype} (soft labels): use the empirical Fisher"
                )
        self.kind, self.mc_samples, self.seed = kind, mc_samples if kind == "mc" else 1, seed
        self.hvp = f"fisher/mc({self.mc_samples})" if kind == "mc" else "fisher/empirical"
        generator = torch.Generator().manual_seed(seed)
        self._skip = example_offset if kind == "mc" else 0
        self._factors = [self._output_gradients(batch, generator) for batch in self.batches]

    def _output_gradients(self, batch: Batch, generator: torch.Generator) -> Tensor:
        r""":math:`g^{(s)} = \nabla_z L(z, \hat y^{(s)})` for each draw: ``(S, *outputs)``."""
        inputs, targets = batch
        with torch.no_grad(), analysis_mode(self.model, self.bn_mode):
            outputs = model_outputs(call_model(self.model, inputs, self.functional_tensors()))
        draws = 1
        if self.kind == "mc":
            per_example = outputs[0].numel() // outputs.shape[1] if outputs.ndim > 1 else 1
            if self.likelihood == "gaussian":
                per_example = outputs[0].numel()
            values = self._skip * per_example * self.mc_samples
            while values:  # the draws of the examples before these, a chunk at a time
                chunk = min(values, 2**22)
                torch.rand(chunk, generator=generator, dtype=torch.float64)
                values -= chunk
            self._skip = 0
            uniforms = torch.rand(
                outputs.shape[0] * per_example, self.mc_samples, generator=generator,
                dtype=torch.float64,
            )  # fmt: skip
            draws = self.mc_samples
        factors = []
        for s in range(draws):
            drawn = targets
            if self.kind == "mc":
                drawn = _sample_targets(outputs, targets, self.likelihood, uniforms[:, s])
            z = outputs.detach().requires_grad_(True)
            with torch.enable_grad():
                (gradient,) = torch.autograd.grad(self.loss_fn(z, drawn), z)
            factors.append(gradient)
        return torch.stack(factors)

    def _output_matrix(self, k: int, U: Tensor) -> Tensor:
        """:math:`M U` for ``U`` of shape ``(b, *outputs)`` (see the module docstring)."""
        g = self._factors[k]  # (S, *outputs)
        if g.ndim == 2:  # outputs without a class axis: every entry is a prediction
            return g.shape[1] * (g.square().mean(0) * U)
        predictions = g[0].numel() // g.shape[2]
        dots = (g[:, None] * U[None]).sum(dim=3, keepdim=True)  # (S, b, n, 1, ...)
        return predictions * (g[:, None] * dots).mean(0)

    def batch_product(self, k: int, V: list[Tensor]) -> list[Tensor]:
        r""":math:`J_k^\top M_k J_k V` of batch ``k`` (unweighted)."""
        linear = self._linearization(k)
        return linear.vjp_of(self._output_matrix(k, linear.jvp(V)))
