"""Hugging Face models from a local ``save_pretrained`` folder: ``--model hf:DIR``.

The folder's ``config.json`` names the class (``"architectures"``), which must be one
``transformers`` exports; the model is built from that config with no network access and
no remote code, and its weights are read from ``model.safetensors`` (or the shards its
``model.safetensors.index.json`` lists) without unpickling anything. A
``pytorch_model.bin`` is read only through ``torch.load(weights_only=True)``. Weights
Hugging Face ties (GPT-2's ``lm_head.weight`` is its token embedding, absent from the
file) stay tied. ``transformers`` is the optional extra ``flatscape[hf]``, imported here
only, and only when a spec names ``hf:``.

A checkpoint made from such a model records the spec, the folder's config (JSON) and the
SHA-256 of its ``config.json`` in ``model_source``; a later command rebuilds the model
only from a folder the user names again whose ``config.json`` has that SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from distill.errors import DistillInputError
from distill.foreign import fit_state, read_foreign_state

PREFIX = "hf:"
CONFIG_FILE = "config.json"
INSTALL = "pip install 'flatscape[hf]'"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""The weight files of a ``save_pretrained`` folder, in the order they are looked for."""


def is_hf_spec(spec: str | None) -> bool:
    """Whether ``spec`` names a Hugging Face folder (``hf:DIR``)."""
    return spec is not None and spec.startswith(PREFIX)


@dataclass(frozen=True)
class HFFolder:
    """A ``save_pretrained`` folder: where it is and its parsed ``config.json``.

    Attributes:
        spec: The spec as the user wrote it (``hf:DIR``).
        path: The folder.
        config: ``config.json`` as a dict.
        config_sha256: SHA-256 of ``config.json``'s bytes.
    """

    spec: str
    path: Path
    config: dict[str, Any]
    config_sha256: str

    def provenance(self) -> dict[str, Any]:
        """``model_source`` of a checkpoint: spec, config file, its SHA-256 and the config."""
        return {
            "spec": self.spec,
            "source": str(self.path / CONFIG_FILE),
            "source_sha256": self.config_sha256,
            "config": self.config,
        }


def read_folder(spec: str) -> HFFolder:
    """Read and check the folder ``hf:DIR`` names (its ``config.json`` only).

    Raises:
        DistillInputError: No such folder, no ``config.json``, one that is not a JSON
            object, or one without ``"architectures"``.
    """
    path = Path(spec[len(PREFIX) :]).expanduser()
    where = f"--model {spec}"
    if not path.is_dir():
        raise DistillInputError(f"{where}: no folder {path} (give a save_pretrained folder)")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise DistillInputError(f"{where}: no {config_file} (give a save_pretrained folder)")
    data = config_file.read_bytes()
    try:
        config = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistillInputError(f"{where}: {config_file} is not JSON ({err})") from err
    if not isinstance(config, dict):
        raise DistillInputError(f"{where}: {config_file} is not a JSON object")
    names = config.get("architectures")
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise DistillInputError(
            f'{where}: {config_file} must name one model class in "architectures" '
            f"(found {names!r}); save the model with save_pretrained"
        )
    return HFFolder(spec, path.resolve(), config, hashlib.sha256(data).hexdigest())


def import_transformers(spec: str) -> ModuleType:
    """``transformers``, offline, or one line saying how to install it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as err:
        raise DistillInputError(
            f"--model {spec}: needs the transformers package ({err}); {INSTALL}"
        ) from err
    transformers.logging.set_verbosity_error()  # its notes would break one-line output
    return transformers


def model_class(folder: HFFolder) -> type[nn.Module]:
    """The ``transformers`` class ``config.json``'s ``"architectures"`` names."""
    transformers = import_transformers(folder.spec)
    name = folder.config["architectures"][0]
    found = getattr(transformers, name, None) if name.isidentifier() else None
    if not (isinstance(found, type) and issubclass(found, transformers.PreTrainedModel)):
        raise DistillInputError(
            f"--model {folder.spec}: config.json names {name!r}, which transformers "
            f"{transformers.__version__} does not export (remote code is never run)"
        )
    return found


def build_hf_model(spec: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The model of folder ``hf:DIR`` with its weights, and its ``model_source`` record.

    Built under ``torch.device("meta")`` (to compare shapes before allocating), the
    weights are not read.

    Raises:
        DistillInputError: ``kwargs`` given, the folder or its config unusable,
            ``transformers`` missing, or weights that do not fit the model.
    """
    if kwargs:
        raise DistillInputError(
            f"--model {spec} takes no --model-kwargs (got {json.dumps(kwargs)}); its "
            "config.json is the model's configuration: edit it, or save another folder"
        )
    folder = read_folder(spec)
    cls = model_class(folder)
    try:
        model = cls(cls.config_class.from_dict(folder.config))
    except Exception as err:
        raise DistillInputError(
            f"--model {spec}: {cls.__name__} cannot be built from its config.json "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''})"
        ) from err
    if torch.get_default_device().type != "meta":
        fit_state(model, read_weights(folder), f"--model {spec}")
    return model, folder.provenance()


def read_weights(folder: HFFolder) -> dict[str, torch.Tensor]:
    """The folder's weights: safetensors (one file or shards), else a weights-only ``.bin``.

    Raises:
        DistillInputError: No weight file, a damaged one, or a ``.bin`` that needs code
            to unpickle.
    """
    single, index, pickled = (folder.path / name for name in WEIGHT_FILES)
    if single.is_file():
        return read_foreign_state(single, strip_prefix="").tensors
    if index.is_file():
        return _read_shards(index, folder.spec)
    if pickled.is_file():
        return read_foreign_state(pickled, strip_prefix="").tensors
    raise DistillInputError(
        f"--model {folder.spec}: no weights in {folder.path} (looked for {', '.join(WEIGHT_FILES)})"
    )


def _read_shards(index: Path, spec: str) -> dict[str, torch.Tensor]:
    """The tensors of every shard a ``model.safetensors.index.json`` lists."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise DistillInputError(f'--model {spec}: {index} has no "weight_map"') from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise DistillInputError(f"--model {spec}: {index} names the shard {shard!r}")
        tensors.update(read_foreign_state(index.parent / shard, strip_prefix="").tensors)
    return tensors


def require_same_config(meta: dict[str, Any], named: str | None, path: str) -> str:
    """The ``hf:DIR`` to rebuild a checkpoint's model from: named again, same config.

    Raises:
        DistillInputError: ``named`` is missing or not ``hf:``, or its ``config.json``
            differs (by SHA-256) from the one the checkpoint records.
    """
    arch = meta["arch"]
    recorded = (meta.get("model_source") or {}).get("source_sha256")
    if not is_hf_spec(named):
        raise DistillInputError(
            f"{path}: made from the Hugging Face folder {arch}; pass --model {arch} (the "
            "folder with the same config.json) to build it"
        )
    found = read_folder(named).config_sha256
    if recorded and found != recorded:
        raise DistillInputError(
            f"{path}: --model {named}: its config.json is not the one the checkpoint was made "
            f"with (SHA-256 {found[:12]}..., recorded {recorded[:12]}...); name that folder"
        )
    return named
