r"""Curvature operators whose data is split across processes, equal to the one-process operator.

Process :math:`r` holds batches with :math:`N_r` of the :math:`N = \sum_r N_r` examples and
builds the operator :math:`A_r` of the mean loss over its own batches (a
:class:`~landscape.hessian.HessianOperator` or :class:`~landscape.ggn.GGNOperator`, batch
:math:`b` weighted :math:`n_b / N_r`). The operator of the mean loss over all :math:`N`
examples is

.. math::
    A V = \sum_r \frac{N_r}{N} A_r V = \sum_r \sum_{b \in r} \frac{n_b}{N} H_b V ,

one all-reduce (sum) of the size-weighted local products per product, the same for the
gradient and the loss. The result is the same on every process, so Lanczos, power
iteration, Hutchinson, Hutch++ and SLQ run unchanged on top of it: their random vectors
come from seeded CPU generators, identical on every rank, and every rank takes the same
steps. Only the rounding of the sums differs from one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape.distributed import all_reduce_sum
from landscape.hessian import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_loss,
    batch_size,
    require_finite,
)
from landscape.operator import CurvatureOperator


def global_mean_loss(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], bn_mode: str = "eval"
) -> tuple[float, int]:
    """Mean loss over every process's batches and the total example count, on every process.

    Raises :class:`~landscape.errors.LandscapeInputError` on *every* process when the loss
    is not finite, whichever process holds the bad examples (so rank 0 can report it).
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad(), analysis_mode(model, bn_mode):
        for batch in batches:
            n = batch_size(batch)
            total[0] += n * float(batch_loss(model, loss_fn, buffers, batch))
            total[1] += n
    loss_sum, examples = all_reduce_sum(total).tolist()
    examples = int(examples)
    return require_finite(loss_sum / max(examples, 1), examples), examples


class DataParallelOperator(CurvatureOperator):
    r"""The operator of the mean loss over all processes' data, from each process's local one.

    Args:
        local: This process's operator over its own batches; it must provide
            ``num_examples`` (:math:`N_r`), ``loss`` (its mean loss) and ``gradient()``.

    Attributes:
        num_examples: :math:`N`, over all processes.
        loss: The mean loss over all :math:`N` examples.
        share: :math:`N_r / N`.

    Other attributes (``engine``, ``names``, ``output_hessian_name``, ...) are the local
    operator's. Every process must make the same sequence of calls (products, gradients);
    with one process this is the local operator itself.

    Example:
        >>> from landscape.hessian import HessianOperator
        >>> x, y = torch.eye(3, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)
        >>> local = HessianOperator(nn.Linear(3, 1, bias=False).double(), nn.functional.mse_loss,
        ...                         [(x, y)])
        >>> H = DataParallelOperator(local)  # one process: the same operator
        >>> torch.equal(H.to_dense(), local.to_dense()), H.num_examples
        (True, 3)
    """

    def __init__(self, local: CurvatureOperator) -> None:
        super().__init__(local.dim, local.dtype, local.device)
        self.local = local
        local_examples = int(local.num_examples)
        totals = torch.tensor([local_examples, local_examples * local.loss], dtype=torch.float64)
        examples, loss_sum = all_reduce_sum(totals).tolist()
        self.num_examples = int(examples)
        self.share = local_examples / self.num_examples
        self.loss = require_finite(loss_sum / self.num_examples, self.num_examples)

    def __getattr__(self, name: str) -> Any:
        if name == "local":  # not yet set: avoid recursing through __getattr__
            raise AttributeError(name)
        return getattr(self.local, name)

    def _matmat(self, V: Tensor) -> Tensor:
        return all_reduce_sum(self.local.matmat(V) * self.share)

    def gradient(self) -> Tensor:
        """The flat gradient of the mean loss over all processes' data (not counted)."""
        return all_reduce_sum(self.local.gradient() * self.share)


def data_parallel(operator_class: Callable[..., CurvatureOperator]) -> Callable[..., Any]:
    """A constructor like ``operator_class``'s that builds it on this process's batches and
    wraps it in :class:`DataParallelOperator`.

    The loss at the weights is checked over all processes' data first, so a NaN in one
    process's shard stops every process with the same message.

    Example:
        >>> from landscape.hessian import HessianOperator
        >>> build = data_parallel(HessianOperator)  # pass as measure_curvature(operator_factory=)
        >>> x, y = torch.eye(2), torch.zeros(2, 1)
        >>> build(nn.Linear(2, 1), nn.functional.mse_loss, [(x, y)]).num_examples
        2
    """

    def build(
        model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], **options: Any
    ) -> DataParallelOperator:
        batches = list(batches)
        global_mean_loss(model, loss_fn, batches, options.get("bn_mode", "eval"))
        return DataParallelOperator(operator_class(model, loss_fn, batches, **options))

    return build
