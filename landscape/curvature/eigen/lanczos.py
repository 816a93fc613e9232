r"""Extreme eigenpairs by (block) Lanczos with full reorthogonalisation.

The Krylov basis :math:`Q_m = [X_0, X_1, \dots]` grows by one block of ``block_size``
vectors per step: the operator applied to the newest block, orthogonalised twice against
every earlier vector. The products :math:`W_m = A Q_m` are kept, so the projected matrix
:math:`T_m = Q_m^\top A Q_m` and the residual of every Ritz pair
:math:`(\theta_i, y_i = Q_m s_i)`,

.. math::
    r_i = \lVert A y_i - \theta_i y_i \rVert = \lVert W_m s_i - \theta_i Q_m s_i \rVert ,

are computed exactly, without further products.

Iteration stops when every wanted residual is at most ``tol`` relative to its Ritz value.
For a symmetric operator an eigenvalue lies within :math:`r_i` of :math:`\theta_i`, so the
stopping rule certifies the relative error, taking the :math:`i`-th Ritz value for an
approximation of the :math:`i`-th eigenvalue (what no Krylov method can rule out is an
eigenvalue its space has not seen at all; a random start block makes that rare, while a
start close to one eigenvector of a close pair can miss the other). Bounds that use the
gap to the next Ritz value (Kato-Temple, :math:`r_i^2 / \delta_i`) stop sooner but are not
bounds: the Ritz values cannot see an eigenvalue hiding within :math:`r_i` of
:math:`\theta_i`; such a rule missed ``tol=1e-3`` by up to 47x on close pairs
(``tests/landscape/curvature/test_tolerance.py``, ``bench/tolerance.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.curvature.eigen.result import EigenResult
from landscape.curvature.eigen.start import fold_columns, start_block
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator

WHICH = ("largest", "smallest")


def _orthonormal_block(X: Tensor, Q: Tensor, generator: torch.Generator, eps: float) -> Tensor:
    """Columns of ``X`` orthonormalised against ``Q`` and each other (twice is enough).

    A column that vanishes (the Krylov space became invariant) is replaced by a random one.
    """
    columns: list[Tensor] = []
    for j in range(X.shape[1]):
        x = X[:, j].clone()
        for _ in range(3):
            basis = torch.cat([Q, *[c[:, None] for c in columns]], dim=1)
            before = x.norm()
            for _ in range(2):
                x = x - basis @ (basis.T @ x)
            after = x.norm()
            if after > eps**0.5 * before and after > 0:
                break
            x = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        columns.append(x / x.norm())
    return torch.stack(columns, dim=1)


def _ritz_pairs(T: Tensor, Q: Tensor, W: Tensor, k: int, which: str) -> tuple[Tensor, ...]:
    """Rayleigh-Ritz in span(Q): the ``k`` wanted Ritz values, vectors and residual norms."""
    theta, S = torch.linalg.eigh(T.double())
    if which == "largest":
        theta, S = theta.flip(0), S.flip(1)
    S_w = S[:, :k].to(Q.dtype)
    values = theta[:k].to(Q.dtype)
    vectors = Q @ S_w
    residuals = (W @ S_w - vectors * values).norm(dim=0)
    return values, vectors, residuals


def lanczos(
    operator: CurvatureOperator,
    k: int = 1,
    which: str = "largest",
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    block_size: int = 1,
    seed: int = 0,
    start: Tensor | None = None,
    atol: float = 0.0,
) -> EigenResult:
    """The ``k`` largest (or smallest) algebraic eigenpairs of a symmetric operator.

    Args:
        operator: Anything with ``dim``, ``dtype``, ``device`` and ``matmat``.
        k: Number of eigenpairs.
        which: ``"largest"`` or ``"smallest"`` (algebraic).
        tol: Stop when every wanted residual is at most ``tol * |theta_i|`` (or ``atol``).
        max_matvecs: Product budget (default ``min(dim, max(100, 20 k))``); the result
            says ``converged=False`` if it runs out first.
        block_size: Vectors multiplied at once; above 1 it pays where the operator's
            ``matmat`` is cheaper per column than ``matvec`` and helps with clustered
            or repeated eigenvalues.
        seed: Seed of the random start block.
        start: Optional start vector(s), ``(dim,)`` or ``(dim, c)``, e.g. a previous
            result's ``eigenvectors`` (a warm start): more columns than ``block_size`` are
            summed onto the block's columns, fewer are filled up with random ones. The
            stopping rule is the same from any start.
        atol: An absolute residual that also counts as converged: for eigenvalues near 0
            (the smallest of a Hessian), where a relative tolerance cannot be met, e.g.
            ``tol`` times the largest eigenvalue's magnitude.

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 51.0, dtype=torch.float64)))
        >>> result = lanczos(A, k=2, tol=1e-10)
        >>> [round(v, 6) for v in result.eigenvalues.tolist()], result.converged
        ([50.0, 49.0], True)
    """
    n = operator.dim
    if which not in WHICH:
        raise LandscapeInputError(f"which {which!r}: choose one of {', '.join(WHICH)}")
    if not 1 <= k <= n:
        raise LandscapeInputError(f"k={k}: must be between 1 and the dimension {n}")
    if block_size < 1:
        raise LandscapeInputError(f"block_size={block_size}: must be at least 1")
    if max_matvecs is not None and max_matvecs <= k:
        raise LandscapeInputError(f"max_matvecs={max_matvecs}: must exceed k={k}")
    space = _KrylovSpace(operator, block_size, seed, start)
    budget = min(n, max_matvecs or max(100, 20 * k))
    while True:
        space.grow(budget)
        values, vectors, residuals = _ritz_pairs(space.T, space.Q, space.W, k, which)
        bound = torch.clamp(tol * values.abs(), min=atol)
        converged = space.exhausted or (space.size > k and bool((residuals <= bound).all()))
        if converged or space.matvecs >= budget:
            return EigenResult(values, vectors, residuals, space.matvecs, converged, "lanczos")


def lanczos_extremes(
    operator: CurvatureOperator,
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    seed: int = 0,
    start: Tensor | None = None,
) -> tuple[EigenResult, EigenResult]:
    r"""The largest and the smallest eigenpair from one Krylov space.

    A Krylov space holds Ritz approximations of both ends of the spectrum, so one run
    serves both: it grows until the largest pair's residual is at most ``tol``
    :math:`|\theta_{\max}|` and the smallest pair's at most ``tol``
    :math:`\max(|\theta_{\min}|, |\theta_{\max}|)` (the smallest eigenvalue of a trained
    network sits near 0, where a relative tolerance cannot be met). Two separate runs from
    one seed grow the same space and stop on the same rule, so this costs the larger of
    their product counts instead of the sum, and gives the smallest pair of the longer run
    exactly (the eigenvalue maps of ``flatscape eigenmap``, about a quarter fewer products).

    Args:
        operator: Anything with ``dim``, ``dtype``, ``device`` and ``matmat``.
        tol: Relative tolerance, as above.
        max_matvecs: Product budget (default ``min(dim, 200)``, what two runs of
            :func:`lanczos` may spend); the results say ``converged=False`` if it runs out.
        seed: Seed of the random start vector.
        start: Optional start vector(s), ``(dim,)`` or ``(dim, c)``, e.g. a neighbour's
            largest and smallest Ritz vectors: their unit columns are summed into one
            start, whose Krylov space holds both after two products.

    Returns:
        ``(largest, smallest)``, each an :class:`EigenResult` of one pair; both carry the
        products of the shared run.

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(-5.0, 45.0, dtype=torch.float64)))
        >>> top, bottom = lanczos_extremes(A, tol=1e-10)
        >>> values = [round(float(r.eigenvalues[0]), 6) for r in (top, bottom)]
        >>> values, top.matvecs == bottom.matvecs, top.converged
        ([44.0, -5.0], True, True)
    """
    if max_matvecs is not None and max_matvecs < 2:
        raise LandscapeInputError(f"max_matvecs={max_matvecs}: must be at least 2")
    space = _KrylovSpace(operator, 1, seed, start)
    budget = min(operator.dim, max_matvecs or 200)
    while True:
        space.grow(budget)
        top = _ritz_pairs(space.T, space.Q, space.W, 1, "largest")
        bottom = _ritz_pairs(space.T, space.Q, space.W, 1, "smallest")
        scale = float(top[0].abs()[0])
        done = space.size > 2 and float(top[2][0]) <= tol * scale
        done = done and float(bottom[2][0]) <= tol * max(scale, float(bottom[0].abs()[0]))
        converged = space.exhausted or done
        if converged or space.matvecs >= budget:
            return tuple(  # type: ignore[return-value]
                EigenResult(*pair, space.matvecs, converged, "lanczos") for pair in (top, bottom)
            )


class _KrylovSpace:
    """A (block) Krylov basis ``Q``, its products ``W = A Q`` and ``T = Q^T A Q``, grown in place.

    Each :meth:`grow` multiplies the newest block (first the start block: random columns,
    the warm-start columns folded over the first ones), orthogonalised twice against every
    earlier vector.
    """

    def __init__(
        self, operator: CurvatureOperator, block_size: int, seed: int, start: Tensor | None
    ) -> None:
        n, dtype, device = operator.dim, operator.dtype, operator.device
        self.operator, self.n, self.eps = operator, n, torch.finfo(dtype).eps
        self.generator = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, block_size, generator=self.generator, dtype=dtype).to(device)
        if start is not None:
            warm = fold_columns(start_block(start, n, dtype, device), block_size)
            self.X[:, : warm.shape[1]] = warm
        self.Q = torch.empty(n, 0, dtype=dtype, device=device)
        self.W = torch.empty(n, 0, dtype=dtype, device=device)
        self.T = torch.empty(0, 0, dtype=dtype, device=device)
        self.matvecs = 0

    @property
    def size(self) -> int:
        """Vectors in the basis."""
        return self.Q.shape[1]

    @property
    def exhausted(self) -> bool:
        """Whether the basis spans the whole space (its Ritz pairs are exact)."""
        return self.size >= self.n

    def grow(self, budget: int) -> None:
        """Multiply the next block (no more columns than ``budget`` leaves) and extend."""
        X = _orthonormal_block(self.X[:, : budget - self.matvecs], self.Q, self.generator,
                               self.eps)  # fmt: skip
        AX = self.operator.matmat(X)
        self.matvecs += X.shape[1]
        self.T = _extend_projection(self.T, self.Q, X, AX)
        self.Q, self.W = torch.cat([self.Q, X], dim=1), torch.cat([self.W, AX], dim=1)
        self.X = AX  # next block: the newest products, orthogonalised at the next grow


def _extend_projection(T: Tensor, Q: Tensor, X: Tensor, AX: Tensor) -> Tensor:
    """Grow :math:`T = Q^T A Q` by the new block ``X`` (with ``AX``), keeping it symmetric."""
    cross = Q.T @ AX
    corner = X.T @ AX
    corner = (corner + corner.T) / 2
    top = torch.cat([T, cross], dim=1)
    bottom = torch.cat([cross.T, corner], dim=1)
    return torch.cat([top, bottom], dim=0)
