"""The result every eigensolver returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EigenResult:
    r"""Eigenpairs of a symmetric operator with their accuracy and cost.

    Attributes:
        eigenvalues: ``(k,)``, largest first (smallest first for ``which="smallest"``).
        eigenvectors: ``(dim, k)``, unit columns; column ``i`` belongs to ``eigenvalues[i]``.
        residuals: ``(k,)``, :math:`\\lVert A v_i - \\lambda_i v_i \\rVert`, computed exactly
            from products the solver already has.
        matvecs: Operator products the solver spent.
        converged: Whether every pair met the tolerance before the budget ran out.
        engine: The solver that found them: ``"lanczos"``, ``"power"`` or ``"pyhessian"``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    matvecs: int
    converged: bool
    engine: str
