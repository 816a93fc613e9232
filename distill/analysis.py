"""Loading a checkpoint with the data it was trained on, for analysis commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.checkpoint import file_sha256, load_checkpoint
from distill.data import DatasetBundle, dataset_from_description, load_dataset
from distill.errors import DistillInputError
from distill.trainer import model_kwargs

SPLITS = ("train", "test")


@dataclass
class LoadedCheckpoint:
    """A model in eval mode, its metadata, file hash and a fixed list of data batches."""

    path: Path
    model: torch.nn.Module
    metadata: dict[str, Any]
    sha256: str
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    split: str
    samples: int

    @property
    def dataset_name(self) -> str:
        """The name of the dataset the checkpoint was trained on."""
        return self.metadata["dataset"]["name"]


def first_examples(
    dataset: torch.utils.data.TensorDataset,
    samples: int | None,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `samples` examples (all when None) in dataset order, as batches."""
    inputs, targets = dataset.tensors
    if samples is not None:
        if samples < 1:
            raise DistillInputError(f"--samples {samples}: must be >= 1")
        inputs, targets = inputs[:samples], targets[:samples]
    if batch_size < 1:
        raise DistillInputError(f"--batch-size {batch_size}: must be >= 1")
    return [
        (inputs[i : i + batch_size].to(device), targets[i : i + batch_size].to(device))
        for i in range(0, len(targets), batch_size)
    ]


def open_checkpoint(
    path: str | Path,
    device: torch.device | str = "cpu",
    arch: str | None = None,
    dataset: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any], DatasetBundle]:
    """A checkpoint's model (eval mode), metadata and the dataset it was trained on.

    A plain PyTorch state dict (`.pt`/`.pth`) carries neither, so it needs `arch` and
    `dataset`; its weights are read with ``torch.load(weights_only=True)``.
    """
    if Path(path).suffix in (".pt", ".pth"):
        if arch is None or dataset is None:
            raise DistillInputError(f"{path}: a plain state dict needs --arch and --dataset")
        bundle = load_dataset(dataset)
        model, meta = load_checkpoint(
            path, device=device, arch=arch, arch_kwargs=model_kwargs(arch, bundle)
        )
        return model, {**meta, "dataset": bundle.description}, bundle
    model, meta = load_checkpoint(path, device=device)
    if not meta.get("dataset"):
        raise DistillInputError(f"{path}: no dataset recorded; analyse a flatscape checkpoint")
    return model, meta, dataset_from_description(meta["dataset"])


def load_for_analysis(
    path: str | Path,
    split: str = "train",
    samples: int | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint and the first `samples` examples of a split of its dataset.

    The train split is taken without augmentation and in dataset order, so the same
    command always measures the same data.
    """
    if split not in SPLITS:
        raise DistillInputError(f"--split {split}: choose train or test")
    model, meta, bundle = open_checkpoint(path, device=device)
    data = bundle.train_eval if split == "train" else bundle.test
    batches = first_examples(data, samples, batch_size, device)
    n = sum(len(y) for _, y in batches)
    return LoadedCheckpoint(Path(path), model, meta, file_sha256(path), batches, split, n)
