"""Small float64 models and data for the surface tests, with an independent reference loss."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()


def cnn_batchnorm(seed: int = 0) -> nn.Module:
    """A conv net with BatchNorm whose running statistics are not the defaults."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Conv1d(4, 3, 3, stride=2),
        nn.Flatten(),
        nn.Linear(3 * 2, 4),
    ).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(model[1].weight, 0.5, 1.5)
    model.train()  # the surface must be taken in eval mode all the same
    return model


def classification_data(
    sizes: list[int], shape: tuple[int, ...], classes: int = 4, seed: int = 1
) -> list[Batch]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(n, *shape, generator=generator, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=generator),
        )
        for n in sizes
    ]


def reference_loss(
    model: nn.Module, batches: list[Batch], steps: list[tuple[float, dict[str, Tensor]]]
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of a copy of ``model`` moved to theta + sum a*d.

    Written without the code under test: perturb a deep copy in place, one pass over all
    examples concatenated, per-example losses summed in float64.
    """
    moved = copy.deepcopy(model).eval()
    tensors = dict(moved.named_parameters()) | dict(moved.named_buffers())
    with torch.no_grad():
        for name, tensor in tensors.items():
            for a, direction in steps:
                if name in direction:
                    tensor.add_(a * direction[name])
        inputs = torch.cat([x for x, _ in batches])
        targets = torch.cat([y for _, y in batches])
        outputs = moved(inputs)
        losses = nn.functional.cross_entropy(outputs, targets, reduction="none")
        correct = (outputs.argmax(1) == targets).double()
    return float(losses.sum() / len(targets)), float(100 * correct.sum() / len(targets))
