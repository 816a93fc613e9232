"""Symmetric linear operators on flat parameter vectors, with a count of products spent.

Every solver in :mod:`landscape` (Lanczos, power iteration, Hutchinson, Hutch++, SLQ)
sees a curvature matrix only through this interface: ``dim``, ``dtype``, ``device``,
``matvec`` and ``matmat``. A new curvature (a GGN, a data-parallel Hessian) only has to
implement :meth:`CurvatureOperator._matmat`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor


class CurvatureOperator(ABC):
    """A symmetric ``dim x dim`` matrix ``A`` that is only available through products ``A V``.

    Attributes:
        dim: Number of rows (and columns) of ``A``.
        dtype: Floating dtype of vectors ``matvec`` accepts and returns.
        device: Device of those vectors.
        matvecs: Number of matrix-vector products computed so far (a ``matmat`` with
            ``b`` columns counts ``b``).
        progress: Optional callback, called with the number of new products after each
            ``matvec``/``matmat`` (a progress bar's ``update``).
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.dim = dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0
        self.progress: Callable[[int], object] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @abstractmethod
    def _matmat(self, V: Tensor) -> Tensor:
        """Return ``A @ V`` for ``V`` of shape ``(dim, b)``; subclasses implement this."""

    def matmat(self, V: Tensor) -> Tensor:
        """Multiply ``A`` onto the columns of ``V`` (shape ``(dim, b)``)."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"matmat expects shape ({self.dim}, b), got {tuple(V.shape)}")
        V = V.to(device=self.device, dtype=self.dtype)
        result = self._matmat(V)
        self._count(V.shape[1])
        return result

    def matvec(self, v: Tensor) -> Tensor:
        """Multiply ``A`` onto a vector of shape ``(dim,)``."""
        if v.shape != (self.dim,):
            raise ValueError(f"matvec expects shape ({self.dim},), got {tuple(v.shape)}")
        return self.matmat(v[:, None])[:, 0]

    def _count(self, products: int) -> None:
        self.matvecs += products
        if self.progress is not None:
            self.progress(products)

    def to_dense(self, block: int = 32) -> Tensor:
        """The full matrix, ``dim`` products (for tests on small problems)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        columns = [self.matmat(eye[:, i : i + block]) for i in range(0, self.dim, block)]
        return torch.cat(columns, dim=1)

    def to_scipy(self) -> LinearOperator:
        """A :class:`scipy.sparse.linalg.LinearOperator` view (numpy in, numpy out)."""
        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def matmat(X: np.ndarray) -> np.ndarray:
            X = torch.as_tensor(np.asarray(X, dtype=np_dtype), device=self.device)
            return self.matmat(X.reshape(self.dim, -1)).cpu().numpy()

        return LinearOperator(
            self.shape,
            matvec=lambda x: matmat(x).reshape(-1),
            matmat=matmat,
            rmatvec=lambda x: matmat(x).reshape(-1),
            dtype=np_dtype,
        )


class DenseOperator(CurvatureOperator):
    """A symmetric matrix held in memory, for tests and examples.

    Example:
        >>> A = DenseOperator(torch.diag(torch.tensor([3.0, 1.0])))
        >>> A.matvec(torch.tensor([1.0, 1.0])).tolist(), A.matvecs
        ([3.0, 1.0], 1)
    """

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"DenseOperator needs a square matrix, got {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, V: Tensor) -> Tensor:
        return self.matrix @ V
