r"""Stochastic Lanczos quadrature (SLQ): the spectral density from a few Lanczos runs.

For a unit probe :math:`v`, :math:`m` Lanczos steps give a tridiagonal
:math:`T_m = S \operatorname{diag}(\theta) S^\top`; the nodes :math:`\theta_j` and weights
:math:`w_j = S_{1j}^2` form the Gauss quadrature of the measure
:math:`\mu_v = \sum_i (u_i^\top v)^2 \delta_{\lambda_i}`:

.. math::
    v^\top f(A) v \approx \sum_{j=1}^m w_j f(\theta_j),

exact for polynomials of degree up to :math:`2m - 1`. With Rademacher probes scaled to
unit norm, :math:`\mathbb{E}[\mu_v] = \frac{1}{n}\sum_i \delta_{\lambda_i}`, the spectral
density; averaging over probes estimates it, e.g. :math:`\operatorname{tr}(A^k)/n \approx
\frac{1}{p}\sum_{\text{probes}} \sum_j w_j \theta_j^k`. (Ghorbani, Krishnan, Xiao 2019;
PyHessian's ``density``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.curvature.trace.result import rademacher
from landscape.errors import LandscapeInputError
from landscape.operators.base import CurvatureOperator


@dataclass
class SpectralQuadrature:
    """Gauss quadrature nodes and weights, one row per probe.

    Attributes:
        nodes: ``(probes, steps)`` Ritz values; rows of a probe whose Krylov space
            closed early are padded with weight-zero nodes.
        weights: ``(probes, steps)``, each row sums to one.
        matvecs: Operator products spent (``probes * steps`` at most).
    """

    nodes: Tensor
    weights: Tensor
    matvecs: int

    def moment(self, power: int) -> Tensor:
        r"""Per-probe estimates of :math:`\\operatorname{tr}(A^{power}) / n`."""
        return (self.weights * self.nodes**power).sum(dim=1)


def _lanczos_tridiagonal(
    operator: CurvatureOperator, V: Tensor, steps: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Run Lanczos from each column of ``V`` at once, with full reorthogonalisation.

    Returns ``alpha`` ``(steps, b)``, ``beta`` ``(steps - 1, b)`` and the number of steps
    each column really took (its Krylov space may close early).
    """
    dim, b = V.shape
    eps = torch.finfo(V.dtype).eps
    basis = [V / V.norm(dim=0)]
    alpha = torch.zeros(steps, b, dtype=V.dtype)
    beta = torch.zeros(max(steps - 1, 0), b, dtype=V.dtype)
    length = torch.full((b,), steps)
    scale = torch.zeros(b, dtype=V.dtype, device=V.device)
    for j in range(steps):
        W = operator.matmat(basis[j])
        alpha[j] = (basis[j] * W).sum(dim=0).cpu()
        scale = torch.maximum(scale, W.norm(dim=0))
        if j == steps - 1:
            break
        Q = torch.stack(basis, dim=0)  # (j+1, dim, b)
        for _ in range(2):
            W = W - (Q * torch.einsum("kdb,db->kb", Q, W)[:, None, :]).sum(dim=0)
        norms = W.norm(dim=0)
        closed = (norms <= math.sqrt(eps) * scale) & (length == steps)
        length[closed] = j + 1
        beta[j] = norms.cpu()
        basis.append(W / torch.where(norms > 0, norms, 1.0))
    return alpha, beta, length


def _gauss_quadrature(
    alpha: Tensor, beta: Tensor, length: int, steps: int
) -> tuple[Tensor, Tensor]:
    """Nodes and weights of one probe's tridiagonal matrix, padded to ``steps``."""
    T = torch.diag(alpha[:length].double())
    if length > 1:
        off = beta[: length - 1].double()
        T += torch.diag(off, 1) + torch.diag(off, -1)
    theta, S = torch.linalg.eigh(T)
    nodes = torch.zeros(steps, dtype=torch.float64)
    weights = torch.zeros(steps, dtype=torch.float64)
    nodes[:length], weights[:length] = theta, S[0] ** 2
    nodes[length:] = theta[-1]
    return nodes, weights


def slq(
    operator: CurvatureOperator,
    probes: int = 1,
    steps: int = 100,
    seed: int = 0,
    block_size: int = 1,
    vectors: Tensor | None = None,
) -> SpectralQuadrature:
    """Quadrature nodes and weights of the spectral density, from Rademacher probes.

    Args:
        operator: Anything with ``dim``, ``dtype``, ``device`` and ``matmat``.
        probes: Number of random probes (independent Lanczos runs).
        steps: Lanczos steps per probe (capped at ``dim``).
        seed: Seed of the probes.
        block_size: Probes advanced together through one ``matmat``.
        vectors: Optional explicit probes ``(dim, p)``; overrides ``probes``/``seed``.

    Example:
        >>> from landscape.operators.base import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> q = slq(A, steps=3)
        >>> [round(x, 6) for x in q.nodes[0].tolist()], round(float(q.moment(1)[0]), 12)
        ([1.0, 2.0, 3.0], 2.0)
    """
    if steps < 1 or probes < 1:
        raise LandscapeInputError(
            f"SLQ needs density_steps >= 1 and density_probes >= 1, got {steps}, {probes}"
        )
    steps = min(steps, operator.dim)
    if vectors is None:
        generator = torch.Generator().manual_seed(seed)
        vectors = rademacher(operator.dim, probes, generator, operator.dtype, operator.device)
    vectors = vectors.to(device=operator.device, dtype=operator.dtype)
    start = operator.matvecs
    rows = []
    for block in vectors.split(block_size, dim=1):
        alpha, beta, length = _lanczos_tridiagonal(operator, block, steps)
        for i in range(block.shape[1]):
            rows.append(_gauss_quadrature(alpha[:, i], beta[:, i], int(length[i]), steps))
    nodes = torch.stack([r[0] for r in rows])
    weights = torch.stack([r[1] for r in rows])
    return SpectralQuadrature(nodes, weights, operator.matvecs - start)


def gaussian_density(quadrature: SpectralQuadrature, grid: Tensor, sigma: float) -> Tensor:
    r"""The density smoothed by a Gaussian of width ``sigma``, averaged over probes.

    .. math::
        \rho(t) = \frac{1}{p} \sum_{\text{probes}} \sum_j w_j
        \frac{1}{\sigma\sqrt{2\pi}} e^{-(t - \theta_j)^2 / 2\sigma^2}

    It integrates to one over the real line.
    """
    nodes = quadrature.nodes.reshape(-1).double()
    weights = quadrature.weights.reshape(-1).double() / quadrature.nodes.shape[0]
    z = (grid.double()[:, None] - nodes[None, :]) / sigma
    return (weights * torch.exp(-0.5 * z**2)).sum(dim=1) / (sigma * math.sqrt(2 * math.pi))
