"""Checkpoints as single `.safetensors` files: weights, buffers and JSON metadata.

The header holds ``{"flatscape": "<JSON>"}`` with the schema number, architecture and
kwargs, dataset description, role, generation, parent hash, KD settings, seed, recipe,
final metrics, package versions and a SHA-256 of the tensors, which is checked on load
so that a corrupted or edited file is refused instead of silently analysed. Nothing is
ever unpickled: other trainers' files go through ``torch.load(weights_only=True)``
(:mod:`distill.foreign`), and a model made from user code is rebuilt only when the user
names that code again (:mod:`distill.model_spec`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
from contextlib import suppress
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from distill.errors import DistillInputError
from distill.model_spec import build_from_spec, require_named

SCHEMA = 1
METADATA_KEY = "flatscape"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the identity a student records for its teacher)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape a checkpoint's numbers."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    versions["numpy"] = np.__version__
    try:
        versions["flatscape"] = importlib_metadata.version("flatscape")
    except importlib_metadata.PackageNotFoundError:
        versions["flatscape"] = "unknown"
    return versions


def save_checkpoint(path: str | Path, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Write weights, buffers and metadata to one `.safetensors` file, atomically.

    The same model and metadata always give the same bytes (keys are sorted, and the
    metadata must hold no timings).
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    document = {"schema": SCHEMA, **metadata, "weights_sha256": tensors_sha256(tensors)}
    header = {METADATA_KEY: json.dumps(document, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)
    except (OSError, SafetensorError) as err:  # a full disk: the old file stays, no temp file
        found = re.search(r"os error (\d+)", str(err))  # safetensors names the errno in text
        code = int(found.group(1)) if found else getattr(err, "errno", None) or errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None
    finally:
        with suppress(OSError):
            tmp.unlink()
    return path


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


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, header = read_safetensors_file(path)
    if METADATA_KEY not in header:
        raise DistillInputError(f"{path}: no flatscape metadata; not a flatscape checkpoint")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise DistillInputError(f"{path}: metadata is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise DistillInputError(f"{path}: unsupported checkpoint schema {meta.get('schema')!r}")
    if tensors_sha256(tensors) != meta.get("weights_sha256"):
        raise DistillInputError(
            f"{path}: weights do not match their recorded SHA-256 (file corrupted or edited)"
        )
    return tensors, meta


def _fit(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load weights into the model, naming the first mismatch if they do not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise DistillInputError(
            f"{path}: weights do not fit architecture {arch} "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, value in expected.items():
        if value.shape != tensors[name].shape:
            raise DistillInputError(
                f"{path}: weights do not fit architecture {arch} ({name} has shape "
                f"{tuple(tensors[name].shape)}, the architecture needs {tuple(value.shape)})"
            )
    model.load_state_dict(tensors, strict=True)


def is_flatscape_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a ``.safetensors`` file with flatscape metadata (read cheaply)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return METADATA_KEY in (handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return True  # damaged: let the flatscape reader say what is wrong


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    *,
    named_model: str | None = None,
    state_key: str | None = None,
    strip_prefix: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint; returns it in eval mode with its metadata.

    Args:
        path: a flatscape `.safetensors` file, or a checkpoint of another trainer (a
            state dict, a container holding one, a Lightning or torchdistill file, a
            plain `.safetensors`: :mod:`distill.foreign`, never unpickling code)
            together with `arch`.
        device: where to put the model.
        arch: the model of a foreign checkpoint: a registry name or a code spec
            (``file.py:callable``; ignored for flatscape files).
        arch_kwargs: its keyword arguments.
        named_model: the ``--model`` the user gave; a flatscape file made from user
            code is rebuilt only if it names that code
            (:func:`distill.model_spec.require_named`).
        state_key: where a foreign container holds the weights.
        strip_prefix: a key prefix to remove from a foreign state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillInputError(f"checkpoint {path} not found")
    if is_flatscape_checkpoint(path):
        tensors, meta = _read_safetensors(path)
        spec = require_named(meta, named_model, str(path))
        model, _ = build_from_spec(spec, meta.get("arch_kwargs", {}))
        _fit(model, tensors, path, meta["arch"])
        return model.to(device).eval(), meta
    if arch is None:
        raise DistillInputError(
            f"{path}: not a flatscape checkpoint; name its model with --model (and its data "
            "with --dataset, --data or --data-file)"
        )
    from distill.foreign import fit_state, read_foreign_state

    state = read_foreign_state(path, state_key=state_key, strip_prefix=strip_prefix)
    model, source = build_from_spec(arch, arch_kwargs or {})
    fit_state(model, state.tensors, str(path))
    foreign = {"format": state.format, "key": state.key, "stripped": state.stripped,
               "sha256": file_sha256(path), **state.extra}  # fmt: skip
    meta: dict[str, Any] = {
        "schema": 0, "arch": arch, "arch_kwargs": arch_kwargs or {}, "model_source": source,
        "foreign": foreign,
    }  # fmt: skip
    return model.to(device).eval(), meta
