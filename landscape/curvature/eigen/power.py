r"""Deflated power iteration, as PyHessian computes top eigenvalues (for comparison).

For each of the ``k`` eigenpairs: start from a random unit vector, and repeat

.. math::
    v \leftarrow \frac{P v}{\lVert P v \rVert},\quad
    \lambda \leftarrow v^\top A v,\quad v \leftarrow \frac{A v}{\lVert A v \rVert},

where :math:`P` projects out the eigenvectors already found, until :math:`\lambda` changes
by less than ``tol`` relative to its previous value (PyHessian's rule). It converges to the
eigenvalue of largest *magnitude* at rate :math:`|\lambda_2 / \lambda_1|`, so it can stop
early, below :math:`\lambda_1`, when that ratio is close to one.

Unlike PyHessian, the vector kept is the one whose Rayleigh quotient is reported, so its
residual :math:`\lVert A v - \lambda v \rVert` is exact and costs no extra product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.curvature.eigen.result import EigenResult
from landscape.curvature.eigen.start import start_block
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator


def _deflate(v: Tensor, found: list[Tensor]) -> Tensor:
    for u in found:
        v = v - (u @ v) * u
    return v / v.norm()


def _one_eigenpair(
    operator: CurvatureOperator,
    found: list[Tensor],
    tol: float,
    max_iter: int,
    generator: torch.Generator,
    start: Tensor | None = None,
) -> tuple[float, Tensor, float, int, bool]:
    """One power-iteration run, from ``start`` or else a random vector.

    Returns the value, vector, residual, products spent and whether it converged.
    """
    v = torch.randn(operator.dim, generator=generator, dtype=operator.dtype).to(operator.device)
    if start is not None:
        v = start
    previous = None
    for iteration in range(1, max_iter + 1):
        v = _deflate(v, found)
        Av = operator.matvec(v)
        value = float(v @ Av)
        residual = float((Av - value * v).norm())
        if previous is not None and abs(value - previous) / (abs(previous) + 1e-6) < tol:
            return value, v, residual, iteration, True
        previous = value
        if iteration < max_iter:
            v = Av / Av.norm()
    return value, v, residual, max_iter, False


def power_iteration(
    operator: CurvatureOperator,
    k: int = 1,
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    seed: int = 0,
    start: Tensor | None = None,
) -> EigenResult:
    """The ``k`` eigenpairs of largest magnitude, one after the other, PyHessian's way.

    Args:
        operator: Anything with ``dim``, ``dtype``, ``device`` and ``matvec``.
        k: Number of eigenpairs.
        tol: Relative change of the eigenvalue between two iterations that stops a run.
        max_matvecs: Product budget, split evenly over the ``k`` eigenpairs (default
            ``100 k``: PyHessian's ``maxIter=100`` per eigenvalue); the result says
            ``converged=False`` if a pair runs out first.
        seed: Seed of the random start vectors.
        start: Optional start vector(s), ``(dim,)`` or ``(dim, c)``, e.g. a previous
            result's ``eigenvectors``: column ``i`` starts pair ``i`` (random beyond ``c``).

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64)))
        >>> result = power_iteration(A, k=1, tol=1e-12)
        >>> round(float(result.eigenvalues[0]), 9)
        4.0
    """
    if not 1 <= k <= operator.dim:
        raise LandscapeInputError(f"k={k}: must be between 1 and the dimension {operator.dim}")
    if max_matvecs is not None and max_matvecs < k:
        raise LandscapeInputError(f"max_matvecs={max_matvecs}: need at least one per pair, k={k}")
    per_pair = 100 if max_matvecs is None else max_matvecs // k
    generator = torch.Generator().manual_seed(seed)
    warm = None
    if start is not None:
        warm = start_block(start, operator.dim, operator.dtype, operator.device).T
    values, vectors, residuals = [], [], []
    matvecs, converged = 0, True
    for i in range(k):
        first = warm[i] if warm is not None and i < len(warm) else None
        value, vector, residual, spent, ok = _one_eigenpair(
            operator, vectors, tol, per_pair, generator, first
        )
        values.append(value)
        vectors.append(vector)
        residuals.append(residual)
        matvecs += spent
        converged &= ok
    dtype = operator.dtype
    return EigenResult(
        torch.tensor(values, dtype=dtype),
        torch.stack(vectors, dim=1),
        torch.tensor(residuals, dtype=dtype),
        matvecs,
        converged,
        "power",
    )
