"""A dataset's splits as tensors, with what a checkpoint records about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from distill.model_call import take

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class DictInputsDataset(Dataset):
    """``(inputs, labels)`` whose inputs are a dict of tensors (``input_ids``, ...).

    ``tensors`` is ``(inputs, labels)``, as a :class:`TensorDataset`'s, so code that
    reads a split's tensors reads these too; an item is ``({name: row}, label)``.
    """

    def __init__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.tensors = (inputs, labels)

    def __len__(self) -> int:
        return len(self.tensors[1])

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs, labels = self.tensors
        return take(inputs, index), labels[index]


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
