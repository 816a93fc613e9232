"""A `.safetensors` file's tensors and header metadata, whoever wrote it.

flatscape's checkpoints keep their JSON metadata under :data:`METADATA_KEY`
(:mod:`distill.checkpoint`); other tools' files are read by :mod:`distill.foreign`.
Nothing in a `.safetensors` file is code, so reading one runs nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from distill.errors import DistillInputError

METADATA_KEY = "flatscape"
"""The header key under which a flatscape checkpoint keeps its JSON metadata."""


def read_safetensors_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a `.safetensors` file and its header metadata (strings).

    Raises:
        DistillInputError: the file cannot be read as safetensors.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise DistillInputError(f"{path}: not a readable .safetensors file ({err})") from err
    return tensors, header
