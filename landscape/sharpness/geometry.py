r"""Perturbation geometries: the per-weight scale :math:`c` of :math:`\delta = c \odot u`.

Sharpness is measured in a ball :math:`\lVert u \rVert_2 \le \rho` of *normalized*
coordinates :math:`u = \delta / c` (Kwon et al. 2021, ASAM; Andriushchenko et al. 2023):

- ``plain``: :math:`c = 1`, the Euclidean ball :math:`\lVert \delta \rVert_2 \le \rho`.
- ``elementwise``: :math:`c_i = |w_i| + \eta`. Invariant (for :math:`\eta = 0`) to any
  positive rescaling of individual weights that leaves the network's function unchanged
  (e.g. ReLU layer :math:`l` times :math:`a`, layer :math:`l+1` times :math:`1/a`).
- ``filterwise``: every weight of a filter (one output unit: a row of a linear layer, an
  output channel of a convolution, i.e. the slice ``w[j]`` of a tensor with two or more
  axes) gets the filter's root-mean-square weight
  :math:`c = \lVert w_j \rVert_2 / \sqrt{m_j} + \eta` (:math:`m_j` entries). A Gaussian
  :math:`c \odot z` is then, filter by filter, Li et al.'s (2018) filter-normalized
  direction, the one :mod:`landscape.surface.directions` draws for loss surfaces. One-axis
  tensors (biases, BatchNorm scales and shifts) get :math:`c = 0` and are not perturbed,
  as with loss-landscape's ``--xignore biasbn``. Invariant to rescaling whole filters or
  layers.

Biases and BatchNorm affine parameters are perturbed in the plain geometry and, scaled by
their own magnitude, in the element-wise one (so a zero bias does not move when
:math:`\eta = 0`); BatchNorm running statistics are buffers and never perturbed. Models
are evaluated in eval mode by default, where BatchNorm is an affine map with fixed
statistics and therefore *not* invariant to rescaling the layer before it.
"""

from __future__ import annotations

import math

from torch import Tensor

from landscape.errors import LandscapeInputError

GEOMETRIES = ("plain", "elementwise", "filterwise")


def perturbation_scale(weight: Tensor, geometry: str, eta: float = 0.0) -> Tensor:
    """The scale :math:`c` (same shape as ``weight``) of one parameter tensor.

    Example:
        >>> import torch
        >>> w = torch.tensor([[1.0, -7.0], [0.0, 2.0]])
        >>> scale = perturbation_scale(w, "filterwise")  # row RMS: sqrt(50 / 2), sqrt(4 / 2)
        >>> [[round(v, 6) for v in row] for row in scale.tolist()]
        [[5.0, 5.0], [1.414214, 1.414214]]
        >>> perturbation_scale(w, "elementwise").tolist()
        [[1.0, 7.0], [0.0, 2.0]]
    """
    weight = weight.detach()
    if geometry == "plain":
        return weight.new_ones(weight.shape)
    if geometry == "elementwise":
        return weight.abs() + eta
    if geometry == "filterwise":
        if weight.ndim < 2:
            return weight.new_zeros(weight.shape)
        rms = weight.flatten(1).norm(dim=1) / math.sqrt(weight[0].numel()) + eta
        return rms.view(-1, *([1] * (weight.ndim - 1))).expand_as(weight).clone()
    raise LandscapeInputError(f"geometry {geometry!r}: choose one of {', '.join(GEOMETRIES)}")


def perturbation_scales(
    weights: dict[str, Tensor], geometry: str, eta: float = 0.0
) -> dict[str, Tensor]:
    """:func:`perturbation_scale` of every tensor, by name."""
    if eta < 0:
        raise LandscapeInputError(f"eta={eta}: must be >= 0")
    return {name: perturbation_scale(w, geometry, eta) for name, w in weights.items()}
