"""Checkpoints whose header says what a test wants: valid weights, any metadata."""

import json

from safetensors.torch import save_file

from distill.checkpoint import tensors_sha256
from distill.models import build_model

KWARGS = {"input_dim": 16, "hidden": [8], "num_classes": 4}
DATASET = {
    "name": "synthetic", "root": None, "options": {}, "train_size": None, "label_noise": 0.0,
    "noise_seed": 0, "noisy_labels": 0, "n_train": 512, "n_test": 512, "num_classes": 4,
    "augment": False, "augmentation": None,
}  # fmt: skip


def tensors():
    """The weights of a small synthetic-data MLP."""
    model = build_model("mlp", **KWARGS)
    return {name: value.contiguous() for name, value in model.state_dict().items()}


def valid_header(weights):
    """A header as ``flatscape train`` writes it, for ``weights``."""
    return {
        "schema": 1, "arch": "mlp", "arch_kwargs": dict(KWARGS), "dataset": json.loads(
            json.dumps(DATASET)), "role": "teacher", "generation": 0, "seed": 0,
        "parent_sha256": None, "kd": None, "metrics": {"test_accuracy": 0.5},
        "recipe": {"epochs": 2, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
                   "batch_size": 128, "schedule": "cosine", "milestones": [], "gamma": 0.1,
                   "warmup_epochs": 0},
        "threads": 1, "versions": {"torch": "2"}, "weights_sha256": tensors_sha256(weights),
    }  # fmt: skip


def write(path, weights, header):
    """A checkpoint of ``weights`` whose metadata is ``header`` (JSON-encoded unless a str)."""
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(weights, str(path), metadata={"flatscape": text})
    return path


def lying(path, edit):
    """A checkpoint whose valid header was changed by ``edit(header)``; the hash still holds."""
    weights = tensors()
    header = valid_header(weights)
    edit(header)
    return write(path, weights, header)
