r"""Do two networks compute the same function? Top-1 agreement, KL divergence, linear CKA.

For outputs (logits) :math:`z_A` of ``model`` (the teacher) and :math:`z_B` of ``other``
(the student) on the same examples :math:`i = 1, \dots, N`:

.. math::
    \text{agreement} = \frac{1}{N} \#\{i : \arg\max z_{A,i} = \arg\max z_{B,i}\}, \qquad
    \text{KL} = \frac{1}{N} \sum_i \sum_c p_{A,ic} (\log p_{A,ic} - \log p_{B,ic}),

with :math:`p = \operatorname{softmax}(z)` at temperature 1: the "fidelity" measures of
Stanton et al. 2021 (*Does knowledge distillation really work?*). For token outputs
``(n, seq, classes)`` every position is an example, except those whose label is ``-100``.

Linear CKA (Kornblith et al. 2019, *Similarity of Neural Network Representations
Revisited*) of two representations :math:`X \in \mathbb{R}^{N \times p}`,
:math:`Y \in \mathbb{R}^{N \times q}` of the same examples, columns centred:

.. math::
    \text{CKA}(X, Y) = \frac{\lVert Y^\top X \rVert_F^2}
                            {\lVert X^\top X \rVert_F \, \lVert Y^\top Y \rVert_F},

1 for identical representations (and invariant to rotations and isotropic scaling),
computed per layer on the outputs of same-named modules (forward hooks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from landscape._types import (
    Batch,
    analysis_mode,
    call_model,
    in_analysis_mode,
    model_outputs,
    move_batch,
)
from landscape.errors import LandscapeInputError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Agreement:
    """Top-1 agreement (a fraction), KL(model || other) in nats, and the examples counted."""

    agreement: float
    kl: float
    examples: int


def _positions(outputs: Tensor, targets: Tensor) -> Tensor:
    """The outputs as ``(examples, classes)``, token positions labelled -100 left out."""
    flat = outputs.reshape(-1, outputs.shape[-1])
    if targets.shape == outputs.shape[:-1] and not targets.dtype.is_floating_point:
        return flat[targets.reshape(-1) != IGNORE_INDEX]
    return flat


@in_analysis_mode
def function_agreement(model: nn.Module, other: nn.Module, batches: Sequence[Batch]) -> Agreement:
    """Top-1 agreement and KL(p_model || p_other), means over the examples of ``batches``.

    Args:
        model: The reference network (the teacher); left as it was.
        other: The network compared to it (the student); left as it was.
        batches: ``(inputs, targets)`` pairs; targets only mark ignored token positions.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> net = nn.Linear(3, 4)
        >>> found = function_agreement(net, net, [(torch.randn(6, 3), torch.zeros(6).long())])
        >>> found.agreement, found.kl
        (1.0, 0.0)
    """
    same = 0
    kl = torch.zeros((), dtype=torch.float64)
    count = 0
    first = next(iter(model.parameters()))
    with torch.no_grad(), analysis_mode(other):
        for batch in batches:
            inputs, targets = move_batch(batch, first.device, first.dtype)
            a = _positions(model_outputs(call_model(model, inputs)), targets).double()
            b = _positions(model_outputs(call_model(other, inputs)), targets).double()
            if a.shape != b.shape:
                raise LandscapeInputError(
                    f"the two models' outputs differ in shape ({tuple(a.shape)} and "
                    f"{tuple(b.shape)}); compare models with the same classes"
                )
            log_a, log_b = a.log_softmax(-1), b.log_softmax(-1)
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            kl += (log_a.exp() * (log_a - log_b)).sum().cpu()
            count += a.shape[0]
    if count == 0:
        raise LandscapeInputError("batches: no example to compare the models on")
    return Agreement(same / count, max(float(kl) / count, 0.0), count)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two representations of the same ``n`` examples, ``(n, p)`` and ``(n, q)``.

    Computed in float64 from the ``n x n`` Gram matrices when ``n`` is the smaller size,
    else from the feature-space cross products (the same number).

    Example:
        >>> x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
        >>> round(linear_cka(x, 2.0 * x @ torch.linalg.qr(torch.randn(3, 3))[0]), 6)
        1.0
    """
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise LandscapeInputError(
            f"CKA compares representations of the same examples (at least 2); got "
            f"{x.shape[0]} and {y.shape[0]}"
        )
    x = x - x.mean(0)
    y = y - y.mean(0)
    if x.shape[0] < min(x.shape[1], y.shape[1]):
        kx, ky = x @ x.T, y @ y.T
        cross, self_x, self_y = (kx * ky).sum(), kx.norm(), ky.norm()
    else:
        cross, self_x, self_y = (y.T @ x).square().sum(), (x.T @ x).norm(), (y.T @ y).norm()
    if self_x == 0 or self_y == 0:
        return float("nan")  # a constant representation has no similarity to speak of
    return float(cross / (self_x * self_y))


def default_layers(model: nn.Module, other: nn.Module) -> list[str]:
    """Names of the modules that own parameters, present in both models, in model order."""
    theirs = dict(other.named_modules())
    return [
        name
        for name, module in model.named_modules()
        if name and any(True for _ in module.parameters(recurse=False)) and name in theirs
    ]


@contextmanager
def _recorded(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, list[Tensor]]]:
    """Forward hooks that collect the output of each named module, removed afterwards."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise LandscapeInputError(f"layer {missing[0]!r} is not a module of both models")
    found: dict[str, list[Tensor]] = {name: [] for name in names}

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            tensor = model_outputs(output).detach()
            found[name].append(tensor.reshape(tensor.shape[0], -1))

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


@in_analysis_mode
def layer_cka(
    model: nn.Module,
    other: nn.Module,
    batches: Sequence[Batch],
    layers: Sequence[str] | None = None,
) -> dict[str, float]:
    """Linear CKA between the two models' outputs of each same-named module.

    Args:
        model: One network (the teacher); left as it was.
        other: The other (the student), with modules of the same names; left as it was.
        batches: The examples; all their representations are held at once (float64 on
            the CPU: the Gram matrices are ``n x n``).
        layers: Module names; default :func:`default_layers` (those owning parameters).

    Returns:
        CKA per layer, in order.
    """
    names = list(layers) if layers is not None else default_layers(model, other)
    if not names:
        raise LandscapeInputError("no module with parameters is named alike in both models")
    first = next(iter(model.parameters()))
    with (
        torch.no_grad(),
        analysis_mode(other),
        _recorded(model, names) as ours,
        _recorded(other, names) as theirs,
    ):
        for batch in batches:
            inputs, _ = move_batch(batch, first.device, first.dtype)
            call_model(model, inputs)
            call_model(other, inputs)
    return {
        name: linear_cka(torch.cat(ours[name]).cpu(), torch.cat(theirs[name]).cpu())
        for name in names
    }
