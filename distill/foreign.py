"""Reading the weights of checkpoints written by other trainers, without running their code.

Bare state dicts, ``{"model_state_dict": ...}``-style containers, PyTorch Lightning
``.ckpt`` files, torchdistill's ``save_ckpt`` files and other tools' ``.safetensors`` are
opened, their weights found and the wrappers' key prefixes (``module.`` from
DataParallel/DDP, Lightning's attribute name) removed. Pickled files are read with
``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allowed beyond tensors
and plain containers, so a file that needs a class or function to unpickle (a
``__reduce__`` payload such as ``os.system``) is refused before anything in it runs;
``.safetensors`` files hold no code at all.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill.errors import DistillInputError
from distill.safetensors_file import METADATA_KEY, read_safetensors_file

FORMATS = ("state_dict", "container", "lightning", "torchdistill", "safetensors")
# Where containers keep the weights, in order of preference.
STATE_KEYS = ("state_dict", "model", "model_state_dict", "net", "module")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
# Entries beside the weights that hold a run's settings; kept as dicts of JSON-safe values.
SETTINGS_KEYS = ("args", "hyper_parameters")
DDP_PREFIX = "module."

# A damaged file can make torch's readers fail in any of these ways.
_DAMAGED_FILE_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AssertionError,
    struct.error,
)
# What torch's weights-only unpickler says when a file needs code to be rebuilt.
_CODE_NEEDED = (
    (re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)"), "it needs {}"),
    (
        re.compile(r"reduce for unrecognized function (.+?)(?: which belongs|$)", re.M),
        "it calls {}",
    ),
    (re.compile(r"Can only (?:create new object|build) .* but got (.+)$", re.M), "it builds {}"),
)


@dataclass(frozen=True)
class ForeignState:
    """The weights found in another trainer's checkpoint, and where they were found.

    Attributes:
        tensors: the model's state dict, on the CPU, with any wrapper prefix removed.
        format: one of `FORMATS`.
        key: the container key the weights were found under (None for a bare state dict).
        stripped: the key prefix that was removed, e.g. ``"module."`` (None if none).
        extra: JSON-safe information found beside the weights: scalar entries such as
            ``epoch``, and the run's settings (torchdistill's ``args``, Lightning's
            ``hyper_parameters``) as dicts; the names of settings that are not JSON-safe
            are listed under ``dropped_args`` / ``dropped_hyper_parameters``.
    """

    tensors: dict[str, torch.Tensor]
    format: str
    key: str | None = None
    stripped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_foreign_state(
    path: str | Path, state_key: str | None = None, strip_prefix: str | None = None
) -> ForeignState:
    """Find the weights in a `.pt`/`.pth`/`.ckpt`/`.bin` or `.safetensors` file.

    Args:
        path: the checkpoint file.
        state_key: the container key that holds the weights, when it is none of
            `STATE_KEYS` or another one should be used.
        strip_prefix: a module path: only the keys under it are kept, with it removed
            (``"net"`` and ``"net."`` mean the same; ``"student"`` picks a distilling
            Lightning module's student). None removes a ``module.`` on every key, and in
            a Lightning file the attribute name that every key starts with; ``""``
            removes nothing.

    Returns:
        The weights, their format and container key, the prefix removed and the
        JSON-safe information found beside them.

    Raises:
        DistillInputError: if the file is missing, damaged, needs code to unpickle,
            holds no state dict where it was looked for, or is a flatscape checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillInputError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        if state_key is not None:
            raise DistillInputError(
                f"{path}: a .safetensors file has no containers; drop --state-key"
            )
        tensors, extra = _read_safetensors(path)
        fmt, key = "safetensors", None
    elif path.suffix in PICKLE_SUFFIXES:
        checkpoint = _load_weights_only(path)
        fmt, key = _locate_weights(checkpoint, state_key, path)
        where = f"{path}" if key is None else f"{path}: {key!r}"
        tensors = _only_tensors(checkpoint if key is None else checkpoint[key], where)
        extra = {} if key is None else _extra_fields(checkpoint, key)
    else:
        raise DistillInputError(
            f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors or one of "
            f"{', '.join(PICKLE_SUFFIXES)}"
        )
    strip_attribute = fmt == "lightning" and key == "state_dict"
    prefix = _prefix_to_strip(tensors, strip_prefix, strip_attribute, path)
    tensors = _strip(tensors, prefix, path)
    return ForeignState(tensors, fmt, key, prefix, extra)


def fit_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load `tensors` into `model` strictly, naming what does not fit.

    Floating-point tensors are cast to the dtype of the model's tensor; any other dtype
    (integer buffers such as ``num_batches_tracked``) must match exactly. A tied weight
    (one parameter under two names, as GPT-2's ``lm_head.weight`` is its token embedding)
    may be stored under one of its names only, as Hugging Face saves it.

    Args:
        model: the module to load into.
        tensors: its state dict; a ``_metadata`` entry is ignored.
        source: where the tensors came from, for messages (usually the file's path).

    Raises:
        DistillInputError: on a non-tensor value, missing or unexpected keys, a shape
            that differs, or a non-floating dtype that differs.
    """
    tensors = _with_tied_names(model, _only_tensors(tensors, source))
    expected = model.state_dict()
    _check_keys(tensors, expected, source)
    model.load_state_dict(
        {name: _cast(name, value, expected[name], source) for name, value in tensors.items()},
        strict=True,
    )


def _with_tied_names(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``tensors`` plus the missing names of tied weights, each given its stored twin."""
    names_of: dict[int, list[str]] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        names_of.setdefault(id(value), []).append(name)
    filled = dict(tensors)
    for names in names_of.values():
        stored = [name for name in names if name in tensors]
        for name in names:
            if stored and name not in filled:
                filled[name] = tensors[stored[0]]
    return filled


def _load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)``, allowing `argparse.Namespace` only while it runs."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, *_DAMAGED_FILE_ERRORS) as err:
        reason = _code_needed(str(err))
        if reason is not None:
            # torch's own message advises weights_only=False: not a fix to pass on.
            raise DistillInputError(
                f"{path}: refused: the pickle holds more than tensors and plain containers "
                f"({reason}); flatscape never unpickles code"
            ) from None
        raise DistillInputError(
            f"{path}: not a readable PyTorch checkpoint ({_first_words(err)})"
        ) from err


def _code_needed(message: str) -> str | None:
    """The class or function a refused weights-only load would have needed, in words."""
    if "Weights only load failed" not in message:
        return None
    for pattern, words in _CODE_NEEDED:
        match = pattern.search(message)
        if match:
            return words.format(match.group(1).strip())
    return None


def _first_words(err: BaseException) -> str:
    """The first sentence of a loader's error, on one line, with its type if torch's own."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("\n\nCheck the documentation")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ", 1)[0].rstrip(".") if lines else ""
    if isinstance(err, pickle.UnpicklingError):
        return first
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of another tool's `.safetensors` file, and its string metadata."""
    tensors, header = read_safetensors_file(path)
    if METADATA_KEY in header:
        raise DistillInputError(f"{path}: this is a flatscape checkpoint; open it directly")
    if not tensors:
        raise DistillInputError(f"{path}: holds no tensors")
    return tensors, ({"metadata": dict(header)} if header else {})


def _locate_weights(checkpoint: Any, state_key: str | None, path: Path) -> tuple[str, str | None]:
    """The checkpoint's format and the key its state dict is under (None: it is one)."""
    if not isinstance(checkpoint, dict):
        raise DistillInputError(
            f"{path}: holds an object of type {type(checkpoint).__name__}, not a state dict or a "
            "dict holding one"
        )
    layout = _layout(checkpoint)
    if state_key is not None:
        if state_key not in checkpoint:
            raise DistillInputError(
                f"{path}: no key {state_key!r} (--state-key); it has {_key_list(checkpoint)}"
            )
        return layout or "container", state_key
    if _is_state_dict(checkpoint):
        return "state_dict", None
    if layout is not None:
        return layout, "state_dict" if layout == "lightning" else "model"
    for key in STATE_KEYS:
        if _is_state_dict(checkpoint.get(key)):
            return "container", key
    raise DistillInputError(
        f"{path}: no state dict under any of {', '.join(STATE_KEYS)}; it has "
        f"{_key_list(checkpoint)}; pass --state-key with the one that holds the weights"
    )


def _layout(checkpoint: dict) -> str | None:
    """The layout of a trainer whose keys the dict has (lightning, torchdistill), or None."""
    if "state_dict" in checkpoint and (
        "pytorch-lightning_version" in checkpoint or {"epoch", "global_step"} <= checkpoint.keys()
    ):
        return "lightning"
    if {"model", "optimizer", "lr_scheduler", "args"} <= checkpoint.keys():
        return "torchdistill"
    return None


def _is_state_dict(value: Any) -> bool:
    """Whether `value` is a non-empty dict of tensors (a ``_metadata`` entry aside)."""
    if not isinstance(value, dict):
        return False
    entries = [v for k, v in value.items() if k != "_metadata"]
    return bool(entries) and all(isinstance(v, torch.Tensor) for v in entries)


def _only_tensors(state: Any, where: str) -> dict[str, torch.Tensor]:
    """`state` as a plain dict of tensors, or an error naming the first entry that is not."""
    if not isinstance(state, dict):
        raise DistillInputError(
            f"{where}: holds an object of type {type(state).__name__}, not a state dict"
        )
    tensors = {}
    for name, value in state.items():
        if name == "_metadata":
            continue
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise DistillInputError(
                f"{where}: entry {name!r} is of type {type(value).__name__}, not a tensor; "
                "a state dict holds only tensors"
            )
        _require_plain(name, value, where)
        tensors[name] = value
    if not tensors:
        raise DistillInputError(f"{where}: the state dict is empty")
    return tensors


def _require_plain(name: str, value: torch.Tensor, where: str) -> None:
    """Refuse a tensor a model's parameters cannot be loaded from, naming it and the fix.

    Sparse and other non-strided layouts, nested, quantized, complex and meta tensors
    (the last hold no values) are refused before any model is built from them.
    """
    if value.layout != torch.strided or value.is_nested:
        layout = "nested" if value.is_nested else str(value.layout).removeprefix("torch.")
        kind, fix = f"a {layout} tensor", "save it with .to_dense()"
    elif value.is_quantized:
        kind, fix = f"a quantized tensor ({value.dtype})", "save it with .dequantize()"
    elif value.is_complex():
        kind, fix = f"a complex tensor ({value.dtype})", "save real weights"
    elif value.device.type == "meta":
        kind, fix = "a meta tensor (a shape without values)", "save the trained weights"
    else:
        return
    raise DistillInputError(
        f"{where}: entry {name!r} is {kind}; flatscape reads dense real tensors only ({fix})"
    )


def _key_list(mapping: dict, limit: int = 10) -> str:
    """The first keys of a dict, for messages."""
    keys = [repr(k) for k in mapping]
    if not keys:
        return "no keys"
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return "keys " + ", ".join(keys[:limit]) + more


def _extra_fields(checkpoint: dict, weights_key: str) -> dict[str, Any]:
    """The JSON-safe scalars and settings stored beside the weights."""
    extra: dict[str, Any] = {}
    for name, value in checkpoint.items():
        if name == weights_key or not isinstance(name, str):
            continue
        if name in SETTINGS_KEYS and isinstance(value, (dict, argparse.Namespace)):
            settings = vars(value) if isinstance(value, argparse.Namespace) else value
            extra[name] = {k: v for k, v in settings.items() if _is_json_safe(k, v)}
            dropped = [str(k) for k, v in settings.items() if not _is_json_safe(k, v)]
            if dropped:
                extra[f"dropped_{name}"] = dropped
        elif _is_json_scalar(value):
            extra[name] = value
    return _plain(extra)


def _is_json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def _is_json_safe(key: Any, value: Any) -> bool:
    """Whether a settings entry survives a JSON round trip unchanged (tuples as lists)."""
    if not isinstance(key, str):
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_json_safe("", v) for v in value)
    if isinstance(value, dict):
        return all(_is_json_safe(k, v) for k, v in value.items())
    return _is_json_scalar(value)


def _plain(value: Any) -> Any:
    """A copy of JSON-safe data made of plain dicts and lists only."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _prefix_to_strip(
    tensors: dict[str, torch.Tensor], strip_prefix: str | None, strip_attribute: bool, path: Path
) -> str | None:
    """The prefix to remove: the one asked for, or the one a wrapper added to every key."""
    if strip_prefix is not None:
        if not strip_prefix.strip("."):
            return None
        prefix = strip_prefix.strip(".") + "."
        if not any(name.startswith(prefix) for name in tensors):
            raise DistillInputError(
                f"{path}: no key starts with {prefix!r} (--strip-prefix); the first are "
                f"{', '.join(list(tensors)[:3])}"
            )
        return prefix
    if all(name.startswith(DDP_PREFIX) for name in tensors):
        return DDP_PREFIX
    if strip_attribute:
        firsts = {name.split(".", 1)[0] for name in tensors}
        if len(firsts) == 1 and all("." in name for name in tensors):
            return firsts.pop() + "."
    return None


def _strip(
    tensors: dict[str, torch.Tensor], prefix: str | None, path: Path
) -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, with it removed (all of them when None).

    Keys without the prefix are left out: a Lightning module that distils holds
    ``student.*`` and ``teacher.*``, and ``--strip-prefix student`` picks the student.
    """
    if prefix is None:
        return tensors
    return {name.removeprefix(prefix): v for name, v in tensors.items() if name.startswith(prefix)}


def _check_keys(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str
) -> None:
    """Raise naming the missing and unexpected keys, if there are any."""
    missing = [name for name in expected if name not in tensors]
    unexpected = [name for name in tensors if name not in expected]
    if not missing and not unexpected:
        return
    counts = []
    if missing:
        counts.append(f"{len(missing)} missing ({_first_three(missing)})")
    if unexpected:
        counts.append(f"{len(unexpected)} unexpected ({_first_three(unexpected)})")
    raise DistillInputError(
        f"{source}: the weights do not fit the model: {', '.join(counts)}"
        f"{_prefix_hint(unexpected, expected)}"
    )


def _first_three(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _prefix_hint(unexpected: list[str], expected: dict[str, torch.Tensor]) -> str:
    """A `--strip-prefix` hint if every unexpected key fits once one shared prefix is gone."""
    if not unexpected:
        return ""
    paths = [name.split(".") for name in unexpected]
    for depth in range(1, min(len(p) for p in paths)):
        if len({tuple(p[:depth]) for p in paths}) > 1:
            break
        prefix = ".".join(paths[0][:depth]) + "."
        if all(name.removeprefix(prefix) in expected for name in unexpected):
            return (
                f"; the unexpected keys fit once {prefix!r} is removed: "
                f"pass --strip-prefix {prefix[:-1]}"
            )
    return ""


def _cast(name: str, value: torch.Tensor, target: torch.Tensor, source: str) -> torch.Tensor:
    """`value` in the dtype of the model's `target`, if both are floating point."""
    if value.shape != target.shape:
        raise DistillInputError(
            f"{source}: the weights do not fit the model: {name} has shape "
            f"{tuple(value.shape)}, the model needs {tuple(target.shape)}"
        )
    if value.dtype == target.dtype:
        return value
    if value.is_floating_point() and target.is_floating_point():
        return value.to(target.dtype)
    raise DistillInputError(
        f"{source}: {name} is {value.dtype}, the model needs {target.dtype}; "
        "only floating-point tensors are cast"
    )
