"""The flatscape checkpoint header as a schema: every field a loader reads, typed and bounded.

The weights' SHA-256 covers the tensors only, so anyone can edit the JSON header of a
checkpoint and keep it loadable. :func:`validate_header` is the one check of that JSON,
run on every load before a model or a dataset is built from it: a field of the wrong
type, out of range, or missing is one :class:`DistillInputError` naming the file and the
field (``dataset.options.test_size``), never a ``KeyError`` deep inside a command.

Required: ``schema`` (1), ``weights_sha256``, ``arch``, ``arch_kwargs``, ``dataset``.
Optional fields are checked when present; keys this version does not know are kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from distill.errors import DistillInputError

SCHEMA = 1
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_TEXT = 4096  # a spec, a path or a name longer than this is not one flatscape wrote
MAX_EPOCHS = 100_000  # a recipe a student inherits; more is a lie, not a run
RECIPE_FIELDS = {
    "epochs": "int", "lr": "number", "momentum": "number", "weight_decay": "number",
    "batch_size": "int", "schedule": "text", "milestones": "ints", "gamma": "number",
    "warmup_epochs": "int",
}  # fmt: skip
FIX = "the header was edited or damaged; use the original file or make it again"


class _Lie(Exception):
    """A field that is not what the schema says (caught and named by the validator)."""

    def __init__(self, field: str, expected: str, value: Any = None, said: str = "") -> None:
        shown = "null or missing" if value is None else _show(value)
        self.text = f"{field}: {said}" if said else f"{field} is {shown}; expected {expected}"
        super().__init__(self.text)


def _show(value: Any) -> str:
    """A short one-line rendering of a JSON value for a message."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ints(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= MAX_EPOCHS and all(map(_is_int, value))


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_real(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _text(meta: dict, key: str, where: str, optional: bool = False) -> str | None:
    value = meta.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _Lie(where + key, "a non-empty string", value)
    return value


def _int(meta: dict, key: str, where: str, low: int, high: int, optional: bool = False) -> None:
    value = meta.get(key)
    if value is None and optional:
        return
    if not _is_int(value) or not low <= value <= high:
        raise _Lie(where + key, f"an int in [{low}, {high}]", value)


def _sha(meta: dict, key: str, where: str, optional: bool = False) -> None:
    value = meta.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise _Lie(where + key, "a SHA-256 (64 hex digits)", value)


def _object(meta: dict, key: str, where: str, optional: bool = False) -> dict | None:
    value = meta.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _Lie(where + key, "a JSON object", value)
    return value


def _model(meta: dict) -> None:
    from distill.models import ARCHITECTURES, resolve_model_kwargs
    from distill.user_code import is_code_spec

    arch = _text(meta, "arch", "")
    kwargs = _object(meta, "arch_kwargs", "")
    source = _object(meta, "model_source", "", optional=True)
    if source is not None:
        _text(source, "spec", "model_source.", optional=True)
        _text(source, "source", "model_source.", optional=True)
        _sha(source, "source_sha256", "model_source.", optional=True)
        _object(source, "config", "model_source.", optional=True)  # a Hugging Face config
    if is_code_spec(arch):
        return
    if arch not in ARCHITECTURES:
        raise _Lie("arch", f"a code spec or one of {', '.join(sorted(ARCHITECTURES))}", arch)
    try:
        resolve_model_kwargs(arch, **kwargs)
    except DistillInputError as err:
        raise _Lie("arch_kwargs", "", said=str(err)) from err


def _dataset(meta: dict) -> None:
    from distill.data import DATASETS, check_options

    data = _object(meta, "dataset", "")
    name = _text(data, "name", "dataset.")
    where = "dataset."
    if name == "npz":
        _text(data, "path", where)
        _sha(data, "sha256", where)
    elif name == "code":
        _text(data, "spec", where)
        _object(data, "kwargs", where, optional=True)
        _text(data, "source", where, optional=True)
        _sha(data, "source_sha256", where, optional=True)
    elif name not in DATASETS:
        raise _Lie("dataset.name", f"one of {', '.join((*DATASETS, 'npz', 'code'))}", name)
    else:
        _text(data, "root", where, optional=True)
        options = _object(data, "options", where, optional=True) or {}
        try:
            check_options(name, options)
        except DistillInputError as err:
            raise _Lie("dataset.options", "", said=str(err)) from err
        _int(data, "train_size", where, 1, 10**9, optional=True)
        _int(data, "noise_seed", where, 0, 2**32 - 1, optional=True)
        noise = data.get("label_noise", 0.0)
        if not _is_number(noise) or not 0 <= noise < 1:
            raise _Lie("dataset.label_noise", "a number in [0, 1)", noise)
        if not isinstance(data.get("augment", False), bool):
            raise _Lie("dataset.augment", "true or false", data["augment"])
    for key in ("n_train", "n_test", "num_classes", "noisy_labels"):
        _int(data, key, where, 0, 10**12, optional=True)
    names = data.get("class_names")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise _Lie("dataset.class_names", "a list of strings", names)


def _recipe(meta: dict) -> None:
    recipe = _object(meta, "recipe", "", optional=True)
    if recipe is None:
        return
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "int": (_is_int, "an int"), "number": (_is_number, "a finite number"),
        "text": (_is_text, "a string"), "ints": (_is_ints, "a list of ints"),
    }  # fmt: skip
    for key, kind in RECIPE_FIELDS.items():
        check, expected = checks[kind]
        if key not in recipe or not check(recipe[key]):
            raise _Lie(f"recipe.{key}", expected, recipe.get(key))
    _int(recipe, "epochs", "recipe.", 1, MAX_EPOCHS)
    _int(recipe, "batch_size", "recipe.", 1, 2**31 - 1)
    _int(recipe, "warmup_epochs", "recipe.", 0, MAX_EPOCHS)
    unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
    if unknown:
        raise _Lie("recipe", f"only {', '.join(RECIPE_FIELDS)}", unknown)


def _facts(meta: dict) -> None:
    """Role, lineage, seed and the recorded numbers."""
    _text(meta, "role", "", optional=True)
    _text(meta, "snapshot_of", "", optional=True)
    _text(meta, "output_key", "", optional=True)
    if "generation" in meta:
        _int(meta, "generation", "", 0, 10**6)
    _int(meta, "epoch", "", 0, 10**9, optional=True)
    _int(meta, "seed", "", 0, 2**63 - 2, optional=True)
    _int(meta, "threads", "", 1, 2**16, optional=True)
    parents = meta.get("parent_sha256")
    if isinstance(parents, list):  # an ensemble's students record every parent
        for index, parent in enumerate(parents):
            _sha({"": parent}, "", f"parent_sha256[{index}]")
    else:
        _sha(meta, "parent_sha256", "", optional=True)
    _sha(meta, "aligned_to", "", optional=True)
    for key in ("metrics", "teacher_metrics"):
        numbers = _object(meta, key, "", optional=True) or {}
        for name, value in numbers.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise _Lie(f"{key}.{name}", "a number", value)
    kd = _object(meta, "kd", "", optional=True) or {}
    for name in ("temperature", "alpha"):
        if name in kd and not _is_number(kd[name]):
            raise _Lie(f"kd.{name}", "a finite number", kd[name])
    for key in ("versions", "imported_from", "foreign", "alignment"):
        _object(meta, key, "", optional=True)


def validate_header(meta: Any, path: str) -> dict[str, Any]:
    """``meta`` (a checkpoint's parsed JSON header) if it has the schema; else one error.

    Args:
        meta: Any JSON value.
        path: The checkpoint, for messages.

    Raises:
        DistillInputError: The header is not an object, has another schema, or a field
            is missing, of the wrong type or out of range; the message names the field.
    """
    if not isinstance(meta, dict):
        raise DistillInputError(
            f"{path}: header metadata is {_show(meta)}, not a JSON object; {FIX}"
        )
    schema = meta.get("schema")
    if not _is_int(schema) or schema != SCHEMA:
        raise DistillInputError(
            f"{path}: unsupported checkpoint schema {_show(schema)} (this flatscape reads {SCHEMA})"
        )
    try:
        _sha(meta, "weights_sha256", "")
        _model(meta)
        _dataset(meta)
        _recipe(meta)
        _facts(meta)
    except _Lie as lie:
        raise DistillInputError(f"{path}: header field {lie.text}; {FIX}") from None
    return meta
