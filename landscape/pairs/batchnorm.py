"""BatchNorm running statistics recomputed for weights the model was never trained at.

A point between two networks (on the straight line, on a curve) has no running statistics
of its own: the interpolated statistics of the end points do not match the activations of
the interpolated weights (their variance shrinks towards the middle of the path, Jordan et
al. 2022, *REPAIR*), and the loss measured with them is too high. So, as Garipov et al.
2018 (``update_bn``) and Frankle et al. 2020 do, each point's statistics are recomputed: a
forward pass over the training batches with BatchNorm in train mode and ``momentum=None``
(the cumulative mean over batches of each batch's mean and unbiased variance), on fresh
buffers, then the point is evaluated in eval mode with them. The model's own buffers and
momentum are never written to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from landscape._types import Batch, analysis_mode, call_model, move_batch
from landscape.surface.slots import TensorSlots


def batchnorm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics, by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    }


def recomputed_statistics(
    model: nn.Module, weights: Mapping[str, Tensor], batches: Sequence[Batch]
) -> dict[str, Tensor]:
    """Every BatchNorm layer's running mean and variance at ``weights``, from ``batches``.

    Args:
        model: The network; its own tensors and BatchNorm momenta are left as they are.
        weights: Parameters (by name) to evaluate at; names not given keep the model's.
        batches: ``(inputs, targets)`` pairs; only the inputs are used.

    Returns:
        ``<layer>.running_mean`` and ``<layer>.running_var`` for every layer; ``{}`` for a
        model without BatchNorm.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return {}
    fresh: dict[str, Tensor] = {}
    for name, layer in layers.items():
        prefix = f"{name}." if name else ""
        fresh[prefix + "running_mean"] = torch.zeros_like(layer.running_mean)
        fresh[prefix + "running_var"] = torch.ones_like(layer.running_var)
        fresh[prefix + "num_batches_tracked"] = torch.zeros_like(layer.num_batches_tracked)
    substitute = {**{n: w for n, w in weights.items() if n not in fresh}, **fresh}
    slots = TensorSlots(model, substitute)
    first = next(iter(model.parameters()))
    momenta = {layer: layer.momentum for layer in layers.values()}
    try:
        for layer in layers.values():
            layer.momentum = None  # cumulative average over the batches
        with torch.no_grad(), analysis_mode(model, "train"), slots.substituted():
            slots.fill(slots.assignments(substitute))
            for batch in batches:
                inputs, _ = move_batch(batch, first.device, first.dtype)
                call_model(model, inputs)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
    return {n: t for n, t in fresh.items() if not n.endswith("num_batches_tracked")}
