r"""Directions in weight space along which a loss surface is drawn.

A direction is a ``dict`` from a model's parameter names (as in ``model.named_parameters()``)
to tensors of the same shapes; the surface at coordinates :math:`(a, b)` is the loss at
:math:`\theta + a\,d_x + b\,d_y`. Random directions perturb parameters only, never buffers
(BatchNorm running statistics stay as trained); an interpolation direction also moves the
floating-point buffers, so that :math:`\theta + 1 \cdot d` *is* the other checkpoint.

Normalizations (Li et al. 2018, *Visualizing the Loss Landscape of Neural Nets*):

- ``"filter"``: each filter :math:`d_{i}` (slice ``[i]`` along the first axis: an output
  channel of a convolution, an output neuron of a linear layer) is rescaled to the norm of
  the same filter of the weights, :math:`d_i \leftarrow d_i \lVert w_i \rVert / \lVert d_i
  \rVert`; loss-landscape's ``--xnorm filter``.
- ``"layer"``: each parameter tensor as a whole, :math:`d \leftarrow d \lVert w \rVert /
  \lVert d \rVert`.
- ``"none"``: the raw Gaussian.

``ignore="biasbn"`` zeroes every parameter with at most one dimension (biases, BatchNorm
and LayerNorm scales and shifts), as loss-landscape's ``--xignore biasbn`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from landscape._types import in_analysis_mode
from landscape.curvature.eigen import lanczos
from landscape.errors import LandscapeInputError
from landscape.operators.batching import curvature_batches, gather_examples
from landscape.operators.hessian import HessianOperator

Direction = dict[str, Tensor]

NORMALIZATIONS = ("filter", "layer", "none")
IGNORES = ("biasbn", "none")


def model_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters by name, detached (shared parameters listed once)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def filter_normalize(direction: Tensor, weights: Tensor) -> Tensor:
    r"""Rescale each filter of ``direction`` to the norm of the same filter of ``weights``.

    Filters are the slices along the first axis; a one-dimensional tensor has filters of
    one entry, so :math:`|d_i| = |w_i|`. A zero filter of ``direction`` stays zero.

    Args:
        direction: A tensor of the parameter's shape.
        weights: The parameter.

    Returns:
        :math:`d_i \lVert w_i \rVert / \lVert d_i \rVert` for every filter :math:`i`.

    Example:
        >>> d = filter_normalize(torch.tensor([[3.0, 4.0], [1.0, 0.0]]),
        ...                      torch.tensor([[0.0, 1.0], [0.0, 2.0]]))
        >>> [[round(v, 6) for v in row] for row in d.tolist()]  # rows of norm 1 and 2
        [[0.6, 0.8], [2.0, 0.0]]
    """
    if direction.dim() == 0:
        return layer_normalize(direction, weights)
    d_norms = direction.reshape(direction.shape[0], -1).norm(dim=1)
    w_norms = weights.reshape(weights.shape[0], -1).norm(dim=1)
    scale = torch.where(d_norms > 0, w_norms / d_norms, torch.zeros_like(d_norms))
    return direction * scale.reshape(-1, *([1] * (direction.dim() - 1)))


def layer_normalize(direction: Tensor, weights: Tensor) -> Tensor:
    r"""Rescale ``direction`` as a whole to the norm of ``weights`` (zero stays zero).

    :math:`d \lVert w \rVert / \lVert d \rVert`.
    """
    d_norm = direction.norm()
    if d_norm == 0:
        return direction.clone()
    return direction * (weights.norm() / d_norm)


def normalize_direction(
    direction: Mapping[str, Tensor],
    weights: Mapping[str, Tensor],
    normalization: str = "filter",
    ignore: str = "biasbn",
) -> Direction:
    """Apply a normalization and the ``ignore`` rule to every tensor of a direction.

    Args:
        direction: Tensors by parameter name.
        weights: The model's parameters by the same names.
        normalization: ``"filter"``, ``"layer"`` or ``"none"``.
        ignore: ``"biasbn"`` zeroes tensors with at most one dimension; ``"none"`` keeps them.

    Returns:
        A new direction; the input is not modified.
    """
    _check_choice("normalization", normalization, NORMALIZATIONS)
    _check_choice("ignore", ignore, IGNORES)
    out: Direction = {}
    for name, d in direction.items():
        w = weights[name]
        if ignore == "biasbn" and d.dim() <= 1:
            out[name] = torch.zeros_like(d)
        elif normalization == "filter":
            out[name] = filter_normalize(d, w)
        elif normalization == "layer":
            out[name] = layer_normalize(d, w)
        else:
            out[name] = d.clone()
    return out


@in_analysis_mode
def random_direction(
    model: nn.Module,
    generator: torch.Generator,
    normalization: str = "filter",
    ignore: str = "biasbn",
) -> Direction:
    """A Gaussian direction over the model's parameters, normalized.

    The Gaussian is drawn on the CPU from ``generator`` (never torch's global RNG), one
    parameter after the other in ``named_parameters()`` order and in each parameter's
    dtype, then moved to the parameter's device: a seed gives the same direction on any
    device.

    Args:
        model: The model whose parameters define names, shapes and filter norms.
        generator: A CPU ``torch.Generator``, e.g. ``torch.Generator().manual_seed(0)``.
        normalization: ``"filter"`` (default), ``"layer"`` or ``"none"``.
        ignore: ``"biasbn"`` (default) or ``"none"``.
    """
    weights = model_parameters(model)
    raw = {
        name: torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        for name, w in weights.items()
    }
    return normalize_direction(raw, weights, normalization, ignore)


@in_analysis_mode
def interpolation_direction(
    model: nn.Module, other_state: Mapping[str, Tensor], buffers: bool = True
) -> Direction:
    r"""The straight line from ``model`` to another model of the same architecture.

    :math:`d = \theta_{\text{other}} - \theta`, over all parameters and, with ``buffers``,
    the floating-point buffers (BatchNorm running statistics), so that the point
    :math:`x = 1` is exactly the other model in eval mode.

    Args:
        model: The starting point (:math:`x = 0`).
        other_state: The other model's ``state_dict()``.
        buffers: Also interpolate floating-point buffers.

    Raises:
        LandscapeInputError: When names or shapes differ (another architecture).
    """
    own = model_parameters(model)
    if buffers:
        own.update({name: b.detach() for name, b in model.named_buffers() if b.is_floating_point()})
    direction: Direction = {}
    for name, theta in own.items():
        if name not in other_state:
            raise LandscapeInputError(
                f"interp: the other checkpoint has no tensor {name!r}; "
                "interpolate between checkpoints of one architecture"
            )
        other = other_state[name]
        if tuple(other.shape) != tuple(theta.shape):
            raise LandscapeInputError(
                f"interp: {name!r} has shape {tuple(other.shape)} in the other checkpoint "
                f"and {tuple(theta.shape)} here; interpolate between checkpoints of one "
                "architecture"
            )
        direction[name] = other.detach().to(device=theta.device, dtype=theta.dtype) - theta
    return direction


def eigen_directions(
    model: nn.Module, vectors: Sequence[Tensor] | Tensor, names: Sequence[str] | None = None
) -> list[Direction]:
    r"""Turn flat vectors (e.g. Hessian eigenvectors) into per-parameter directions.

    Args:
        model: The model the vectors live on.
        vectors: Flat vectors of length :math:`\\sum_p \\text{numel}(p)` over ``names``, or a
            matrix with one vector per column.
        names: The parameters the vectors cover, in order; by default the trainable
            parameters in ``named_parameters()`` order (the operators' convention).
            Parameters not covered get zero.

    Returns:
        One direction per vector, over all parameters.
    """
    weights = model_parameters(model)
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(vectors, Tensor) and vectors.dim() == 2:
        vectors = list(vectors.T)
    sizes = [weights[n].numel() for n in names]
    directions = []
    for k, vector in enumerate(vectors):
        if vector.numel() != sum(sizes):
            raise LandscapeInputError(
                f"eigen: vector {k} has {vector.numel()} entries, the parameters {sum(sizes)}"
            )
        pieces = dict(zip(names, vector.reshape(-1).split(sizes), strict=True))
        directions.append(
            {
                name: (pieces[name].reshape(w.shape) if name in pieces else torch.zeros_like(w))
                .to(device=w.device, dtype=w.dtype)
                .clone()
                for name, w in weights.items()
            }
        )
    return directions


@in_analysis_mode
def hessian_directions(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    count: int = 2,
    seed: int = 0,
    tol: float = 1e-4,
    graph_budget: int | None = None,
) -> tuple[list[Direction], Tensor]:
    """Directions along the top Hessian eigenvectors of the mean loss over ``batches``.

    Lanczos (:func:`~landscape.curvature.eigen.lanczos.lanczos`) on
    :class:`~landscape.operators.hessian.HessianOperator` over the trainable parameters, model
    in eval mode. Each eigenvector is a unit vector with its sign fixed (its largest-magnitude
    entry is positive), so a seed gives the same directions every time.

    Args:
        model: The model at the point of interest.
        loss_fn: Mean loss of a batch.
        batches: The data the Hessian is taken over.
        count: Number of eigenvectors (one per axis).
        seed: Seed of Lanczos's start vector.
        tol: Relative accuracy of the eigenvalues.
        graph_budget: Bytes the kept gradient graph of a single batch may hold (several
            batches are rebuilt per product anyway); default: no limit.

    Returns:
        The directions (largest eigenvalue first) and the eigenvalues.
    """
    policy, keep = curvature_batches(*gather_examples(batches))  # as hessian measures
    operator = HessianOperator(model, loss_fn, policy, keep_graphs=keep, graph_budget=graph_budget)
    result = lanczos(operator, k=count, tol=tol, seed=seed)
    vectors = result.eigenvectors
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True)))
    return eigen_directions(model, vectors * signs, operator.names), result.eigenvalues


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise LandscapeInputError(f"{option} {value!r}: choose one of {', '.join(choices)}")
