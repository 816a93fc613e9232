r"""Hutchinson's trace estimator with Rademacher probes.

For probes :math:`z_1, \dots, z_m` with independent :math:`\pm 1` entries,

.. math::
    \operatorname{tr}(A) \approx \frac{1}{m} \sum_{i=1}^m z_i^\top A z_i ,\qquad
    \mathrm{SE} = \frac{s}{\sqrt m},

with :math:`s` the sample standard deviation of the :math:`z_i^\top A z_i`. The variance
of one sample is :math:`2 (\lVert A \rVert_F^2 - \sum_i A_{ii}^2)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from landscape.curvature.trace.result import TraceResult, rademacher
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator


def quadratic_forms(operator: CurvatureOperator, probes: Tensor, block_size: int = 1) -> Tensor:
    r""":math:`z_i^\\top A z_i` for the columns of ``probes``, ``block_size`` at a time."""
    values = [
        (block * operator.matmat(block)).sum(dim=0) for block in probes.split(block_size, dim=1)
    ]
    return torch.cat(values)


def sample_stderr(samples: Tensor) -> float:
    """Standard error of the mean of ``samples`` (0 for a single sample)."""
    if samples.numel() < 2:
        return 0.0
    return float(samples.double().std() / math.sqrt(samples.numel()))


def hutchinson_trace(
    operator: CurvatureOperator, matvecs: int = 99, seed: int = 0, block_size: int = 1
) -> TraceResult:
    r"""Hutchinson's estimate of :math:`\\operatorname{tr}(A)` from ``matvecs`` probes.

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64)))
        >>> result = hutchinson_trace(A, matvecs=4)
        >>> result.estimate  # diagonal matrix: every z^T A z equals tr(A)
        55.0
    """
    if matvecs < 1:
        raise LandscapeInputError(f"trace_matvecs {matvecs}: Hutchinson needs at least 1")
    generator = torch.Generator().manual_seed(seed)
    probes = rademacher(operator.dim, matvecs, generator, operator.dtype, operator.device)
    samples = quadratic_forms(operator, probes, block_size)
    return TraceResult(
        float(samples.double().mean()), sample_stderr(samples), matvecs, "hutchinson"
    )
