"""Checkpoints as single `.safetensors` files: weights, buffers and JSON metadata.

The header holds ``{"flatscape": "<JSON>"}`` with the schema number, architecture and
kwargs, dataset description, role, generation, parent hash, KD settings, seed, recipe,
final metrics, package versions and a SHA-256 of the tensors, which is checked on load
so that a corrupted or edited file is refused instead of silently analysed. The hash
covers the tensors only, so the header is checked as a schema (:mod:`distill.header`)
and the declared model is built on the ``meta`` device and compared with the stored
tensors before anything is allocated. Nothing is
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

from distill.allocation import AllocationRefused, allocation_budget
from distill.errors import DistillInputError
from distill.foreign import fit_state, read_foreign_state
from distill.header import SCHEMA, validate_header
from distill.model_call import select_output
from distill.model_spec import build_from_spec, require_named
from distill.safetensors_file import METADATA_KEY, read_safetensors_file
from distill.user_code import describe_error, is_code_spec


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
        if isinstance(err, SafetensorError) and not found:
            raise
        code = int(found.group(1)) if found else getattr(err, "errno", None) or errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None
    finally:
        with suppress(OSError):
            tmp.unlink()
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, header = read_safetensors_file(path)
    if METADATA_KEY not in header:
        raise DistillInputError(f"{path}: no flatscape metadata; not a flatscape checkpoint")
    try:
        meta = json.loads(header[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as err:
        raise DistillInputError(f"{path}: metadata is not valid JSON ({err})") from err
    validate_header(meta, str(path))
    if tensors_sha256(tensors) != meta["weights_sha256"]:
        raise DistillInputError(
            f"{path}: weights do not match their recorded SHA-256 (file corrupted or edited)"
        )
    return tensors, meta


def _mismatch(
    shapes: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor], path: Path, arch: str
) -> str | None:
    """How the stored tensors fail to fit a model's state-dict ``shapes``, or None."""
    missing = sorted(set(shapes) - set(tensors))
    extra = sorted(set(tensors) - set(shapes))
    if missing or extra:
        return (f"{path}: weights do not fit architecture {arch} "
                f"(missing {missing[:3]}, unexpected {extra[:3]})")  # fmt: skip
    for name, shape in shapes.items():
        if shape != tuple(tensors[name].shape):
            return (f"{path}: weights do not fit architecture {arch} ({name} has shape "
                    f"{tuple(tensors[name].shape)}, the architecture needs {shape})")  # fmt: skip
    return None


def _build_fitting(
    spec: str, kwargs: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path, arch: str
) -> torch.nn.Module:
    """The checkpoint's model with its weights, built only once its shapes are known to fit.

    The header's ``arch_kwargs`` may lie (``hidden: [10000000, 10000000]`` asks for 400 TB),
    so the model is first built on the ``meta`` device, where a parameter is a shape
    without memory, and its state dict is compared with the stored tensors; only a model
    that fits is built for real. A model of user code whose constructor fails on the meta
    device (it reads values, calls ``.numpy()``) is built for real within
    :func:`distill.allocation.allocation_budget`: its constructor may allocate at most
    ``4 x`` the checkpoint's tensor bytes ``+ 256 MiB``; beyond that it is refused, as is
    a model whose weights do not fit.

    Raises:
        DistillInputError: The model cannot be built, or the weights do not fit it.
    """
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    try:
        with torch.device("meta"):
            model, _ = build_from_spec(spec, kwargs)
    except DistillInputError as err:
        if not is_code_spec(spec):
            raise DistillInputError(f"{path}: header field arch_kwargs: {err}") from err
        model = _build_within_budget(spec, kwargs, 4 * stored + (256 << 20), path)
    except Exception as err:  # a registry model's kwargs that torch cannot take
        raise DistillInputError(
            f"{path}: header field arch_kwargs: {arch} cannot be built with them "
            f"({describe_error(err)})"
        ) from err
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    problem = _mismatch(shapes, tensors, path, arch)
    if problem:
        raise DistillInputError(problem)
    if any(value.is_meta for value in model.state_dict().values()):
        model, _ = build_from_spec(spec, kwargs)
    model.load_state_dict(tensors, strict=True)
    return model


def _build_within_budget(
    spec: str, kwargs: dict[str, Any], budget: int, path: Path
) -> torch.nn.Module:
    """User code that cannot run on the meta device, built for real within ``budget`` bytes."""
    try:
        with allocation_budget(budget):
            model, _ = build_from_spec(spec, kwargs)
    except AllocationRefused as err:
        raise DistillInputError(
            f"{path}: --model {spec} cannot be built on the meta device, and built for real "
            f"with the header's arch_kwargs it asks for over {budget:,} bytes ({err}); the "
            "header lies, or make the model buildable under torch.device('meta')"
        ) from err
    return model


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
        model = _build_fitting(spec, meta["arch_kwargs"], tensors, path, meta["arch"])
        if meta.get("output_key"):  # trained with train --output-key: its logits, as then
            select_output(model, meta["output_key"])
        return model.to(device).eval(), meta
    if arch is None:
        raise DistillInputError(
            f"{path}: not a flatscape checkpoint; name its model with --model (and its data "
            "with --dataset, --data or --data-file)"
        )
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
