"""What the user named for an analysis: the checkpoint, its model, its data and the loss.

Training lives in :mod:`distill.trainer` and :mod:`distill.losses`; this module resolves
sources for measuring: a checkpoint (flatscape's or another trainer's) with the data it
was trained on (:class:`Sources`, :func:`open_checkpoint`), and the loss ``--loss`` names
(:func:`analysis_loss`, checked once on the model by :func:`check_loss`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distill import model_loss
from distill.bundle import DatasetBundle
from distill.checkpoint import (
    file_sha256,
    is_flatscape_checkpoint,
    load_checkpoint,
    package_versions,
    save_checkpoint,
)
from distill.data import dataset_from_description, load_dataset
from distill.errors import DistillInputError
from distill.losses import causal_lm_loss, mse_loss, token_ce_loss
from distill.model_call import example_shape, logits_of, select_output, take, to_device
from distill.safetensors_file import METADATA_KEY
from distill.trainer import evaluate, model_kwargs
from distill.user_code import describe_error, import_callable, is_code_spec
from distill.user_data import (
    check_model_fits,
    load_data_spec,
    load_npz,
    require_class_labels,
)

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
        inputs, targets = take(inputs, slice(0, samples)), targets[:samples]
    if batch_size < 1:
        raise DistillInputError(f"--batch-size {batch_size}: must be >= 1")
    return [
        (
            to_device(take(inputs, slice(i, i + batch_size)), device),
            targets[i : i + batch_size].to(device),
        )  # fmt: skip
        for i in range(0, len(targets), batch_size)
    ]


@dataclass(frozen=True)
class Sources:
    """What the user named beside a checkpoint: its model, its data, its file layout.

    Every field is optional. A flatscape checkpoint needs none, except ``model`` when it
    was made from user code; another trainer's file needs ``model`` and one data source.
    Data named here replaces the data a flatscape checkpoint records.

    Attributes:
        model: A registry name or a code spec (``file.py:callable``), ``--model``.
        model_kwargs: Its keyword arguments (``--model-kwargs``; registry models also
            get the dataset's input shape and class count).
        dataset: A built-in dataset (``--dataset``).
        data: A data code spec (``--data``) and ``data_kwargs``.
        data_file: A ``.npz`` of arrays (``--data-file``).
        state_key: Where a foreign container holds the weights (``--state-key``).
        strip_prefix: A key prefix to remove (``--strip-prefix``).
        output_key: The model output's entry that holds the logits (``--output-key``;
            default: ``logits`` if the output has one, else its first entry).
    """

    model: str | None = None
    model_kwargs: dict[str, Any] | None = None
    dataset: str | None = None
    data: str | None = None
    data_kwargs: dict[str, Any] | None = None
    data_file: str | None = None
    state_key: str | None = None
    strip_prefix: str | None = None
    output_key: str | None = None

    def bundle(self) -> DatasetBundle | None:
        """The data the user named, or None."""
        if self.data_kwargs and not self.data:
            raise DistillInputError("--data-kwargs are the arguments of --data; give --data")
        named = [flag for flag, value in (("--dataset", self.dataset), ("--data", self.data),
                 ("--data-file", self.data_file)) if value]  # fmt: skip
        if len(named) > 1:
            raise DistillInputError(f"give one of {' and '.join(named)}, not both")
        if self.data_file:
            return load_npz(self.data_file)
        if self.data:
            return load_data_spec(self.data, self.data_kwargs or {})
        if self.dataset:
            return load_dataset(self.dataset)
        return None

    def model_kwargs_for(self, bundle: DatasetBundle) -> dict[str, Any]:
        """Keyword arguments of ``model``: a registry model is fitted to the data."""
        if is_code_spec(self.model):
            return dict(self.model_kwargs or {})
        return model_kwargs(self.model, bundle, self.model_kwargs)


def provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """Where a measured model came from, for a report: its model, code, data and file.

    ``arch`` and ``arch_kwargs``, ``model_source`` (user code: the file and its SHA-256),
    ``dataset`` (the whole description: a file's path and SHA-256, a code spec and its
    source's, a built-in's options) and, for another trainer's file, ``foreign`` (its
    layout and SHA-256).
    """
    keys = ("arch", "arch_kwargs", "model_source", "dataset", "foreign", "imported_from")
    return {key: meta[key] for key in keys if meta.get(key) is not None}


def open_checkpoint(
    path: str | Path,
    device: torch.device | str = "cpu",
    sources: Sources | None = None,
) -> tuple[torch.nn.Module, dict[str, Any], DatasetBundle]:
    """A checkpoint's model (eval mode), metadata and the dataset it was trained on.

    Another trainer's file (:mod:`distill.foreign`) carries neither model nor data: it
    needs ``sources.model`` and a data source.
    """
    sources = sources or Sources()
    model, meta, bundle = _open_checkpoint(path, device, sources)
    recorded = meta.get("output_key")
    if recorded is not None and sources.output_key not in (None, recorded):
        raise DistillInputError(
            f"{path} was trained on its output {recorded!r} (train --output-key), which it "
            f"records; drop --output-key {sources.output_key}"
        )
    if sources.output_key is not None and recorded is None:
        select_output(model, sources.output_key)
    return model, meta, bundle


def _check_recorded_kwargs(path: str | Path, meta: dict, given: dict[str, Any] | None) -> None:
    """``--model-kwargs`` on a flatscape checkpoint: accepted when it repeats what it records.

    The checkpoint's model is the one it records; a different value is refused, naming it.
    """
    recorded = meta.get("arch_kwargs") or {}
    for key, value in (given or {}).items():
        if key not in recorded or recorded[key] != value:
            shown = "nothing" if key not in recorded else json.dumps(recorded[key])
            raise DistillInputError(
                f"{path}: records {key}={shown}, --model-kwargs says {json.dumps(value)}; "
                "the checkpoint's model is the one it records: drop --model-kwargs"
            )


def _open_checkpoint(
    path: str | Path, device: torch.device | str, sources: Sources
) -> tuple[torch.nn.Module, dict[str, Any], DatasetBundle]:
    if not Path(path).is_file():
        raise DistillInputError(f"checkpoint {path} not found")
    if is_flatscape_checkpoint(path):
        model, meta = load_checkpoint(path, device=device, named_model=sources.model)
        _check_recorded_kwargs(path, meta, sources.model_kwargs)
        recorded = meta.get("dataset") or {}
        named_again = sources.data is not None and sources.data == recorded.get("spec")
        bundle = None if named_again else sources.bundle()  # its own data code, named again
        if bundle is None:
            if not recorded:
                raise DistillInputError(f"{path}: no dataset recorded; name one with --dataset")
            bundle = dataset_from_description(
                recorded, sources.data, sources.data_kwargs, origin=f"{path} header"
            )
        return model, meta, bundle
    bundle = sources.bundle()
    if sources.model is None or bundle is None:
        raise DistillInputError(
            f"{path}: not a flatscape checkpoint; name its model with --model and its data "
            "with --dataset, --data or --data-file (or make one with flatscape import)"
        )
    model, meta = load_checkpoint(
        path, device=device, arch=sources.model, arch_kwargs=sources.model_kwargs_for(bundle),
        state_key=sources.state_key, strip_prefix=sources.strip_prefix,
    )  # fmt: skip
    return model, {**meta, "dataset": bundle.description}, bundle


def load_for_analysis(
    path: str | Path,
    split: str = "train",
    samples: int | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    sources: Sources | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint and the first `samples` examples of a split of its dataset.

    The train split is taken without augmentation and in dataset order, so the same
    command always measures the same data.
    """
    if split not in SPLITS:
        raise DistillInputError(f"--split {split}: choose train or test")
    model, meta, bundle = open_checkpoint(path, device=device, sources=sources)
    data = bundle.train_eval if split == "train" else bundle.test
    batches = first_examples(data, samples, batch_size, device)
    n = sum(len(y) for _, y in batches)
    return LoadedCheckpoint(Path(path), model, meta, file_sha256(path), batches, split, n)


def import_checkpoint(
    path: str | Path, out: str | Path, sources: Sources, generation: int = 0
) -> dict[str, Any]:
    """Turn another trainer's checkpoint into a flatscape one; returns its metadata.

    The weights are read without unpickling code (:mod:`distill.foreign`) into the model
    ``sources.model`` names, measured on the data ``sources`` names, and written to
    ``out`` with the model's spec and kwargs, its source file and SHA-256, the dataset,
    the original file's SHA-256 and layout, and the measured metrics; so later commands
    need no more flags (except ``--model`` again for user code, which is never imported
    unless named).

    Raises:
        DistillInputError: A flatscape checkpoint (nothing to import), a missing model or
            data, or weights that do not fit.
    """
    if is_flatscape_checkpoint(path):
        raise DistillInputError(f"{path}: already a flatscape checkpoint; nothing to import")
    if generation < 0:
        raise DistillInputError(f"--generation {generation}: must be >= 0")
    model, meta, bundle = open_checkpoint(path, sources=sources)
    require_class_labels(bundle, "import (for its accuracy)")
    check_model_fits(model, bundle, "import")
    train, test = evaluate(model, bundle.train_eval), evaluate(model, bundle.test)
    metrics = {"train_loss": train["loss"], "train_accuracy": train["accuracy"],
               "test_loss": test["loss"], "test_accuracy": test["accuracy"]}  # fmt: skip
    document = {
        "arch": meta["arch"], "arch_kwargs": meta["arch_kwargs"], "dataset": bundle.description,
        "role": "teacher" if generation == 0 else "student", "generation": generation,
        "seed": None, "recipe": None, "kd": None, "parent_sha256": None, "metrics": metrics,
        "imported_from": {"path": str(Path(path).resolve()), **meta["foreign"]},
        "versions": package_versions(),
    }  # fmt: skip
    if meta.get("model_source"):
        document["model_source"] = meta["model_source"]
    save_checkpoint(out, model, document)
    return document


ANALYSIS_LOSSES = {
    "cross_entropy": F.cross_entropy, "mse": mse_loss,
    "causal_lm": causal_lm_loss, "token_ce": token_ce_loss,
}  # fmt: skip
"""The losses ``--loss`` names: batch means, as every curvature and surface measures.

``causal_lm`` and ``token_ce`` are means over counted tokens (labels ``(N, L)``, ``-100``
not counted) and carry ``count``, so batches are weighted by their tokens."""
TOKEN_LOSSES = ("causal_lm", "token_ce")


def recorded_loss(checkpoint: str | Path | None) -> str:
    """The loss a measurement of ``checkpoint`` takes by default.

    The token loss it was trained with (its header's ``loss``), else ``cross_entropy``.
    Read from the header alone; a file that is not a flatscape checkpoint, or is damaged,
    gives ``cross_entropy`` (its reader says what is wrong later).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(METADATA_KEY, "null"))
    except Exception:  # noqa: BLE001 (not ours, or damaged: cross-entropy, refused later)
        return "cross_entropy"
    loss = meta.get("loss") if isinstance(meta, dict) else None
    return loss if loss in ("causal_lm", "token_ce") else "cross_entropy"


def analysis_loss(
    spec: str, own: bool = False
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dict]:
    """The loss ``--loss`` names: a name of :data:`ANALYSIS_LOSSES` or ``file.py:callable``.

    A callable is ``loss(outputs, targets) -> mean loss`` (a scalar tensor, differentiable
    twice for curvature). Returns it and its record (``{"name", "spec", "source",
    "source_sha256"}``). ``model`` (the loss the model computes, :mod:`distill.model_loss`)
    only where ``own`` says the caller measures it; elsewhere it is refused in one line.
    """
    if spec in ANALYSIS_LOSSES:
        return ANALYSIS_LOSSES[spec], {"name": spec}
    if spec == model_loss.NAME:
        if not own:
            raise model_loss.refuse_own_loss("this command")
        return model_loss.own_loss, {"name": spec}
    if not is_code_spec(spec):
        raise DistillInputError(
            f"--loss {spec!r}: choose {', '.join(ANALYSIS_LOSSES)}, model, or name one as "
            "file.py:callable"
        )
    user = import_callable(spec, "--loss")
    return user.function, {"name": spec, **user.provenance()}


def _check_token_shapes(name: str, outputs: Any, targets: torch.Tensor) -> None:
    """Refuse, in one line, token labels without a token loss and a token loss without them."""
    tokens = not targets.is_floating_point() and targets.ndim == 2
    if name in TOKEN_LOSSES:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else None
        if not tokens or shape is None or len(shape) != 3 or shape[:2] != tuple(targets.shape):
            raise DistillInputError(
                f"--loss {name} needs integer labels (N, L) (-100 where not counted) and "
                f"logits (N, L, V); these are labels {targets.dtype} {tuple(targets.shape)} "
                f"and outputs {shape or type(outputs).__name__}"
            )
    elif tokens and name in ANALYSIS_LOSSES:
        raise DistillInputError(
            f"--loss {name}: these labels are one token per position {tuple(targets.shape)}; "
            f"pass --loss {' or --loss '.join(TOKEN_LOSSES)}"
        )


def check_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    name: str,
) -> None:
    """Call the model and the loss once on 8 examples: a scalar tensor, or one clear line.

    A NaN/inf value is left to the measurement, which names the examples it was over.
    """
    inputs, targets = take(batch[0], slice(0, 8)), batch[1][:8]
    with torch.no_grad():
        try:
            outputs = logits_of(model, inputs)
        except Exception as err:
            raise DistillInputError(
                f"the model cannot take these inputs of shape {example_shape(inputs)}: "
                f"{describe_error(err)}"
            ) from err
        soft = isinstance(outputs, torch.Tensor) and targets.shape == outputs.shape
        _check_token_shapes(name, outputs, targets)
        if name == "cross_entropy" and targets.is_floating_point() and not soft:
            raise DistillInputError(
                f"--loss cross_entropy needs class labels (or soft labels of the outputs' "
                f"shape), and these targets are {targets.dtype} of shape "
                f"{tuple(targets.shape)}; pass --loss mse or your own --loss file.py:callable"
            )
        try:
            value = loss_fn(outputs, targets)
        except Exception as err:
            raise DistillInputError(
                f"--loss {name}: raised {describe_error(err)} on outputs of shape "
                f"{tuple(outputs.shape)} and targets of dtype {targets.dtype}"
            ) from err
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise DistillInputError(f"--loss {name}: must return the batch's mean loss (a scalar "
                                f"tensor), got {shape}")  # fmt: skip
