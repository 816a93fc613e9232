"""Training teachers and self-distilled students: data, models, KD losses, checkpoints.

The public names, by group (``distill.__all__``; each is imported on first use):

Data
    load_dataset, dataset_from_description, DatasetBundle, DATASETS
Models
    build_model, ARCHITECTURES, count_parameters, declared_permutation_groups
Losses
    KDConfig, kd_loss, ALPHA_MEANING, sequence_kd_loss, causal_lm_loss, token_ce_loss,
    IGNORE_INDEX
Training
    Recipe, TEACHER_RECIPES, train_teacher, train_student, recipe_for_student, evaluate
Checkpoints
    save_checkpoint, load_checkpoint, file_sha256
Other trainers' checkpoints
    read_foreign_state, fit_state, ForeignState
Your own models, data and losses
    build_from_spec, load_npz, load_data_spec, analysis_loss, Sources, import_checkpoint
Hugging Face folders (hf:DIR) and a model's own loss (--loss model)
    build_hf_model, own_loss, own_loss_batches
Analysis data
    load_for_analysis, open_checkpoint, first_examples, LoadedCheckpoint
Errors
    DistillInputError

``distill`` never imports ``landscape``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_dataset": "distill.data",
    "dataset_from_description": "distill.data",
    "DatasetBundle": "distill.bundle",
    "DATASETS": "distill.data",
    "build_model": "distill.models",
    "ARCHITECTURES": "distill.models",
    "count_parameters": "distill.models",
    "declared_permutation_groups": "distill.permutations",
    "KDConfig": "distill.losses",
    "kd_loss": "distill.losses",
    "ALPHA_MEANING": "distill.losses",
    "sequence_kd_loss": "distill.losses",
    "causal_lm_loss": "distill.losses",
    "token_ce_loss": "distill.losses",
    "IGNORE_INDEX": "distill.losses",
    "Recipe": "distill.trainer",
    "TEACHER_RECIPES": "distill.trainer",
    "train_teacher": "distill.trainer",
    "train_student": "distill.trainer",
    "recipe_for_student": "distill.trainer",
    "evaluate": "distill.trainer",
    "save_checkpoint": "distill.checkpoint",
    "load_checkpoint": "distill.checkpoint",
    "file_sha256": "distill.checkpoint",
    "read_foreign_state": "distill.foreign",
    "fit_state": "distill.foreign",
    "ForeignState": "distill.foreign",
    "build_from_spec": "distill.model_spec",
    "build_hf_model": "distill.hf_model",
    "own_loss": "distill.model_loss",
    "own_loss_batches": "distill.model_loss",
    "load_npz": "distill.user_data",
    "load_data_spec": "distill.user_data",
    "analysis_loss": "distill.sources",
    "Sources": "distill.sources",
    "import_checkpoint": "distill.sources",
    "load_for_analysis": "distill.sources",
    "open_checkpoint": "distill.sources",
    "first_examples": "distill.sources",
    "LoadedCheckpoint": "distill.sources",
    "DistillInputError": "distill.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
