r"""Curvature operators whose data is split across processes, equal to the one-process operator.

Process :math:`r` holds batches with :math:`N_r` of the :math:`N = \sum_r N_r` examples and
builds the operator :math:`A_r` of the mean loss over its own batches (a
:class:`~landscape.operators.hessian.HessianOperator` or
:class:`~landscape.operators.ggn.GGNOperator`, batch :math:`b` weighted :math:`n_b / N_r`).
The operator of the mean loss over all :math:`N` examples is

.. math::
    A V = \sum_r \frac{N_r}{N} A_r V = \sum_r \sum_{b \in r} \frac{n_b}{N} H_b V ,

one all-reduce (sum) of the size-weighted local products per product, the same for the
gradient and the loss. For a token loss, :math:`n_b`, :math:`N_r` and :math:`N` count tokens
(:func:`~landscape._types.batch_weight`), and the operator is that of the mean token loss.

The result is the same on every process, so Lanczos, power iteration, Hutchinson, Hutch++
and SLQ run unchanged on top of it: their random vectors come from seeded CPU generators,
identical on every rank, and every rank takes the same steps. Only the rounding of the sums
differs from one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape._types import (
    Batch,
    LossFunction,
    analysis_mode,
    batch_size,
    batch_weight,
    in_analysis_mode,
)
from landscape.curvature.measure import CurvatureRequest, CurvatureResult
from landscape.curvature.model import model_curvature
from landscape.distributed.process import (
    all_reduce_sum,
    rank,
    shard_examples,
    shard_whole_batches,
    world_size,
)
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator
from landscape.operators.batching import gather_examples
from landscape.operators.kinds import make_operator
from landscape.operators.mean_loss import MeanLossOperator, batch_loss, require_finite


def global_mean_loss(
    model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], bn_mode: str = "eval"
) -> tuple[float, int]:
    """Mean loss over every process's batches and the total it is over, on every process.

    The total is of examples, or of counted tokens for a token loss (:func:`batch_weight`).

    Raises :class:`~landscape.errors.LandscapeInputError` on *every* process when the loss
    is not finite, whichever process holds the bad examples (so rank 0 can report it).
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad(), analysis_mode(model, bn_mode):
        for batch in batches:
            n = batch_weight(loss_fn, batch)
            total[0] += n * float(batch_loss(model, loss_fn, buffers, batch))
            total[1] += n
    loss_sum, examples = all_reduce_sum(total).tolist()
    examples = int(examples)
    return require_finite(loss_sum / max(examples, 1), examples), examples


class DataParallelOperator(CurvatureOperator):
    r"""The operator of the mean loss over all processes' data, from each process's local one.

    Args:
        local: This process's operator over its own batches (a
            :class:`~landscape.operators.mean_loss.MeanLossOperator`): its
            ``num_examples`` (:math:`N_r`), ``loss`` and ``gradient()`` are combined.

    Attributes:
        num_examples: The examples over all processes.
        num_counted: :math:`N`, over all processes: ``num_examples``, or the counted tokens
            of a token loss.
        loss: The mean loss over all :math:`N`.
        share: :math:`N_r / N`.
        local: This process's operator.
        hvp, names, batches, graphs_kept, graph_bytes, kept_examples: The local operator's.

    Every process must make the same sequence of calls (products, gradients); with one
    process this is the local operator itself.

    Example:
        >>> from landscape.operators.hessian import HessianOperator
        >>> x, y = torch.eye(3, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)
        >>> local = HessianOperator(nn.Linear(3, 1, bias=False).double(), nn.functional.mse_loss,
        ...                         [(x, y)])
        >>> H = DataParallelOperator(local)  # one process: the same operator
        >>> torch.equal(H.to_dense(), local.to_dense()), H.num_examples
        (True, 3)
    """

    def __init__(self, local: MeanLossOperator) -> None:
        super().__init__(local.dim, local.dtype, local.device)
        self._local = local
        self.names, self.batches = local.names, local.batches
        local_counted = int(local.num_counted)
        totals = torch.tensor(
            [local.num_examples, local_counted, local_counted * local.loss], dtype=torch.float64
        )
        examples, counted, loss_sum = all_reduce_sum(totals).tolist()
        self.num_examples, self.num_counted = int(examples), int(counted)
        self.share = local_counted / self.num_counted
        self.loss = require_finite(loss_sum / self.num_counted, self.num_examples)

    @property
    def local(self) -> MeanLossOperator:
        """This process's operator over its own batches."""
        return self._local

    @property
    def hvp(self) -> str:
        """The local operator's product engine (``"auto"`` resolves on the first product)."""
        return self.local.hvp

    @property
    def graphs_kept(self) -> bool:
        """Whether the local products reuse kept gradient graphs."""
        return self.local.graphs_kept

    @property
    def graph_bytes(self) -> int:
        """Bytes this process's kept graphs hold."""
        return self.local.graph_bytes

    @property
    def kept_examples(self) -> int:
        """Examples of this process whose graphs are kept."""
        return self.local.kept_examples

    def _matmat(self, V: Tensor) -> Tensor:
        return all_reduce_sum(self.local.matmat(V) * self.share)

    def gradient(self) -> Tensor:
        """The flat gradient of the mean loss over all processes' data (not counted)."""
        return all_reduce_sum(self.local.gradient() * self.share)


def data_parallel_operator(
    kind: str, model: nn.Module, loss_fn: LossFunction, batches: Sequence[Batch], **options: Any
) -> DataParallelOperator:
    """:func:`~landscape.operators.kinds.make_operator` on this process's batches, wrapped.

    The loss at the weights is checked over all processes' data first, so a NaN in one
    process's shard stops every process with the same message.

    Example:
        >>> x, y = torch.eye(2), torch.zeros(2, 1)
        >>> data_parallel_operator("hessian", nn.Linear(2, 1), nn.functional.mse_loss,
        ...                        [(x, y)]).num_examples
        2
    """
    batches = list(batches)
    global_mean_loss(model, loss_fn, batches, options.get("bn_mode", "eval"))
    if kind == "fisher":  # the Monte-Carlo draws continue those of the processes before
        options["example_offset"] = examples_before(sum(batch_size(b) for b in batches))
    return DataParallelOperator(make_operator(kind, model, loss_fn, batches, **options))


def examples_before(count: int) -> int:
    """How many examples the processes of lower rank hold (``count``: this process's)."""
    counts = torch.zeros(world_size(), dtype=torch.float64)
    counts[rank()] = count
    return int(all_reduce_sum(counts)[: rank()].sum())


@in_analysis_mode
def data_parallel_curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Iterable[Batch],
    request: CurvatureRequest | None = None,
    *,
    samples: int | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> CurvatureResult:
    """:func:`~landscape.curvature.model.model_curvature` with the data split over processes.

    Every process passes the same ``data``; each keeps a contiguous share (of the examples
    by default, of the batches with ``batch_size``) and the products are all-reduced, so
    every process gets the result of one process over all the data (up to rounding).
    Without torchrun this is :func:`~landscape.curvature.model.model_curvature`.

    Args:
        model: Any module, the same on every process.
        loss_fn: Mean loss of a batch.
        data: The same DataLoader or batches on every process.
        request: What to measure (default: the top eigenvalue).
        samples: First examples of ``data`` (default: all).
        batch_size: Batches of this size, graphs rebuilt per product (default: cache-sized
            batches with graphs kept).
        **options: Any other argument of ``model_curvature`` (``operator``, ``params``,
            ``hvp``, ``dtype``, ``bn_mode``, ``progress``, request fields).
    """
    engine = request.engine if request is not None else options.get("engine", "lanczos")
    if engine == "pyhessian" and world_size() > 1:
        raise LandscapeInputError(
            "engine pyhessian runs in one process; use lanczos or power under torchrun"
        )
    if batch_size is not None and batch_size < 1:
        raise LandscapeInputError(f"batch_size {batch_size}: must be >= 1")
    inputs, targets = gather_examples(data, samples)
    if batch_size is None:  # the examples are shared; each process cuts its own by the policy
        share = [shard_examples(inputs, targets)]
    else:  # whole batches per process, as one block: cut once, by model_curvature
        share = [shard_whole_batches(inputs, targets, batch_size)]
    factory = data_parallel_operator if world_size() > 1 else make_operator
    return model_curvature(
        model, loss_fn, share, request, batch_size=batch_size, operator_factory=factory,
        **options,
    )  # fmt: skip
