r"""Hutch++ (Meyer, Musco, Musco, Woodruff 2021): low-rank sketch plus Hutchinson.

With :math:`m` products split three ways (:math:`s = \lfloor m/3 \rfloor`):

1. :math:`Q = \operatorname{orth}(A S)` for a Rademacher sketch :math:`S` with :math:`s`
   columns (:math:`s` products);
2. the exact trace of the sketched part, :math:`\operatorname{tr}(Q^\top A Q)`
   (:math:`s` products);
3. Hutchinson on the rest, :math:`\frac{1}{g} \operatorname{tr}(G^\top P A P G)` with
   :math:`P = I - Q Q^\top` and :math:`g = m - 2s` Rademacher probes.

The estimate is unbiased; for a matrix of rank at most :math:`s`, :math:`P A P = 0` and it
is exact. The standard error is that of step 3's samples.
"""

from __future__ import annotations

import torch

from landscape.curvature.trace.hutchinson import quadratic_forms, sample_stderr
from landscape.curvature.trace.result import TraceResult, rademacher
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator


def hutchpp_trace(
    operator: CurvatureOperator, matvecs: int = 99, seed: int = 0, block_size: int = 1
) -> TraceResult:
    r"""Hutch++ estimate of :math:`\\operatorname{tr}(A)` from ``matvecs`` products.

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> U = torch.linalg.qr(torch.randn(50, 2, dtype=torch.float64)).Q
        >>> A = DenseOperator(U @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ U.T)
        >>> result = hutchpp_trace(A, matvecs=9)  # rank 2 < sketch size 3: exact
        >>> round(result.estimate, 10), result.stderr < 1e-12
        (5.0, True)
    """
    if matvecs < 3:
        raise LandscapeInputError(f"trace_matvecs {matvecs}: Hutch++ needs at least 3")
    sketch = matvecs // 3
    remaining = matvecs - 2 * sketch
    generator = torch.Generator().manual_seed(seed)
    args = (generator, operator.dtype, operator.device)
    S = rademacher(operator.dim, sketch, *args)
    AS = torch.cat([operator.matmat(block) for block in S.split(block_size, dim=1)], dim=1)
    Q = torch.linalg.qr(AS).Q
    low_rank = float(quadratic_forms(operator, Q, block_size).double().sum())
    G = rademacher(operator.dim, remaining, *args)
    G = G - Q @ (Q.T @ G)
    samples = quadratic_forms(operator, G, block_size)
    estimate = low_rank + float(samples.double().mean())
    return TraceResult(estimate, sample_stderr(samples), matvecs, "hutchpp")
