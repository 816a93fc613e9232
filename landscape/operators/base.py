"""Symmetric linear operators on flat parameter vectors, with a count of products spent.

Every solver in :mod:`landscape` (Lanczos, power iteration, Hutchinson, Hutch++, SLQ)
sees a curvature matrix only through this interface: ``dim``, ``dtype``, ``device``,
``matvec`` and ``matmat``; reports read what it was taken over and what it cost from the
same interface (``loss``, ``batches``, ``graphs_kept``, ``graph_bytes``, ...), which a
plain matrix answers with None, False or 0. A new curvature (a GGN, a data-parallel
Hessian) only has to implement :meth:`CurvatureOperator._matmat`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor

from landscape._types import Batch
from landscape.errors import LandscapeInputError


class CurvatureOperator(ABC):
    """A symmetric ``dim x dim`` matrix ``A`` that is only available through products ``A V``.

    Attributes:
        dim: Number of rows (and columns) of ``A``.
        dtype: Floating dtype of vectors ``matvec`` accepts and returns.
        device: Device of those vectors.
        matvecs: Number of matrix-vector products computed so far (a ``matmat`` with
            ``b`` columns counts ``b``).
        loss: The loss at the point the curvature is taken (None for a plain matrix).
        num_examples: Examples that loss is the mean over (None for a plain matrix).
        batches: The batches that loss is the mean over, as the products see them (None
            for a plain matrix).
        progress: Optional callback, called with the number of new products after each
            ``matvec``/``matmat`` (a progress bar's ``update``).
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.dim = dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0
        self.progress: Callable[[int], object] | None = None
        self.loss: float | None = None
        self.num_examples: int | None = None
        self.batches: list[Batch] | None = None

    hvp = "matrix"
    """How products are computed, for reports; operators of a loss name their engine."""

    @property
    def graphs_kept(self) -> bool:
        """Whether products reuse kept gradient graphs (a plain matrix keeps none)."""
        return False

    @property
    def graph_bytes(self) -> int:
        """Bytes the kept graphs hold (their saved tensors, parameters excluded)."""
        return 0

    @property
    def kept_examples(self) -> int:
        """Examples whose graphs are kept; the rest are rebuilt for every product."""
        return 0

    @property
    def local(self) -> CurvatureOperator:
        """The operator of this process's own data: itself, but for a data-parallel one."""
        return self

    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``, as scipy expects."""
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

    def gradient(self) -> Tensor | None:
        """The gradient of the loss this matrix is the curvature of, if there is one.

        Solvers use it as a start vector (near a minimum it lies mostly in the top
        eigenspace); a plain matrix has none.
        """
        return None

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


class DifferenceOperator(CurvatureOperator):
    """``A - B`` for two operators of the same dimension (each counts its own products).

    Example:
        >>> A = DenseOperator(torch.eye(2) * 3)
        >>> B = DenseOperator(torch.eye(2))
        >>> DifferenceOperator(A, B).matvec(torch.ones(2)).tolist()
        [2.0, 2.0]
    """

    def __init__(self, A: CurvatureOperator, B: CurvatureOperator) -> None:
        if A.dim != B.dim:
            raise LandscapeInputError(f"operator dimensions differ: {A.dim} and {B.dim}")
        super().__init__(A.dim, A.dtype, A.device)
        self.A, self.B = A, B

    def _matmat(self, V: Tensor) -> Tensor:
        return self.A.matmat(V) - self.B.matmat(V)


class BlockOperator(CurvatureOperator):
    r"""The diagonal block :math:`A_{II}` of an operator, for the index set ``I``.

    Products go through the whole operator (``A`` times ``V`` padded with zeros, rows
    ``I`` kept), so every block of one operator shares its data and kept graphs; each
    block product costs one product of ``A`` and is counted on both.

    Example:
        >>> A = DenseOperator(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
        >>> BlockOperator(A, torch.tensor([1])).to_dense().tolist()
        [[3.0]]
    """

    def __init__(self, operator: CurvatureOperator, index: Tensor) -> None:
        index = torch.as_tensor(index, dtype=torch.long, device=operator.device)
        if index.numel() == 0 or index.min() < 0 or index.max() >= operator.dim:
            raise LandscapeInputError(f"block indices must lie in [0, {operator.dim})")
        super().__init__(index.numel(), operator.dtype, operator.device)
        self.operator, self.index = operator, index
        self.hvp = operator.hvp
        self.loss, self.num_examples = operator.loss, operator.num_examples

    def _matmat(self, V: Tensor) -> Tensor:
        padded = V.new_zeros((self.operator.dim, V.shape[1]))
        padded[self.index] = V
        return self.operator.matmat(padded)[self.index]
