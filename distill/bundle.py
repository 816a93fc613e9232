"""A dataset's splits as tensors, with what a checkpoint records about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import TensorDataset

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class DatasetBundle:
    """A dataset's splits as tensors, ready for training and analysis.

    Attributes:
        train: the training split (inputs already normalized; augmentation, if any, is
            applied per batch by the trainer through `augment`).
        train_eval: the same training split as used for evaluation and curvature: no
            augmentation, dataset order. The same object as `train` here, since
            augmentation is never baked into the tensors.
        test: the test split.
        num_classes: number of classes.
        input_shape: shape of one input, without the batch dimension.
        description: name, options, normalization, augmentation and sizes (JSON-able).
        augment: a function of a batch and a generator, applied only in training.
        noisy_labels: how many training labels were flipped (label-noise option).
    """

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    description: dict[str, Any]
    augment: Augment | None = None
    noisy_labels: int = 0
    train_eval: TensorDataset = field(init=False)

    def __post_init__(self) -> None:
        self.train_eval = self.train
