"""The user's own data: a ``.npz`` file of arrays, or a callable named with ``--data``.

``--data-file FILE.npz`` holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and
optionally ``classes``: the class count, or one name per class). Arrays named
``x_<split>__<name>`` (``x_train__attention_mask``) make that split's inputs a dict
``{"input_ids": x_<split>, "<name>": ...}``, given to the model as keyword arguments.

``--data SPEC`` names
``package.module:callable`` or ``file.py:callable`` returning ``(train, test)`` or
``{"train": ..., "test": ...}``, each a ``TensorDataset``, an ``(inputs, labels)`` pair
of arrays or tensors (inputs may be a dict of them), or any map-style dataset of
``(input, label)`` items. Inputs are used as given (no normalization: the user's pipeline
already chose one): floating-point ones become float32, integer ones (token ids) keep their
dtype; labels are class indices (int) for classification, floats for regression losses,
or integer token labels ``(N, L)`` (``-100`` where not counted) for ``--loss
causal_lm``/``token_ce``.

The bundle's ``description`` records the file and its SHA-256, or the spec, its kwargs
and its source's SHA-256. A file is read again from its path (and must still have that
hash); a spec is called again only when the user names it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from distill.bundle import DatasetBundle, DictInputsDataset
from distill.errors import DistillInputError
from distill.losses import IGNORE_INDEX
from distill.model_call import example_shape, logits_of, take, to_device
from distill.user_code import call_user, describe_error, import_callable, spec_from_here

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
EXTRA = ("x_train__", "x_test__")
"""Prefixes of the arrays that join ``x_train``/``x_test`` as dict inputs."""
FLAG = "--data"


def open_regular(path: Path, where: str) -> Any:
    """``path`` opened for reading if it is a regular file (a FIFO or device never is).

    The file is opened non-blocking and checked with ``fstat``: opening a FIFO for reading
    would wait for a writer forever, and a device could be read forever.

    Raises:
        DistillInputError: No such file, not a regular file, or not readable; the
            message starts with ``where``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as err:
        raise DistillInputError(f"{where}: no such file") from err
    except OSError as err:
        raise DistillInputError(f"{where}: cannot be read ({err.strerror})") from err
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = (
            "a folder"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        )
        raise DistillInputError(f"{where}: {kind}, not a regular file; give an .npz file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _sha256(handle: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    handle.seek(0)
    return digest.hexdigest()


def _as_tensors(split: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of one split, whatever container it came in."""
    if isinstance(split, TensorDataset):
        if len(split.tensors) != 2:
            raise DistillInputError(f"{where}: a TensorDataset of (inputs, labels), got "
                                    f"{len(split.tensors)} tensors")  # fmt: skip
        x, y = split.tensors
    elif isinstance(split, (tuple, list)) and len(split) == 2 and isinstance(split[0], dict):
        x = {name: torch.as_tensor(np.asarray(a)) for name, a in split[0].items()}
        y = torch.as_tensor(np.asarray(split[1]))
    elif isinstance(split, (tuple, list)) and len(split) == 2:
        try:
            x, y = (torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
                    for a in split)  # fmt: skip
        except (TypeError, ValueError, RuntimeError) as err:
            raise DistillInputError(f"{where}: inputs and labels must be numeric arrays "
                                    f"({describe_error(err)})") from err  # fmt: skip
    elif isinstance(split, Dataset) and hasattr(split, "__len__"):
        items = [split[i] for i in range(len(split))]
        if not items or not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
            raise DistillInputError(f"{where}: items must be (input, label) pairs")
        try:
            x = torch.stack([torch.as_tensor(i[0]) for i in items])
            y = torch.as_tensor(np.asarray([np.asarray(i[1]) for i in items]))
        except (TypeError, ValueError, RuntimeError) as err:
            raise DistillInputError(f"{where}: items of different shapes or non-numbers "
                                    f"({describe_error(err)})") from err  # fmt: skip
    else:
        raise DistillInputError(
            f"{where}: give a TensorDataset, an (inputs, labels) pair or a dataset of "
            f"(input, label) items, not {type(split).__name__}"
        )
    return x, y


def _largest_id(inputs: Any) -> int:
    """The largest integer token id of the inputs (``input_ids`` of a dict), else -1."""
    ids = inputs.get("input_ids") if isinstance(inputs, dict) else inputs
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.numel() == 0:
        return -1
    return int(ids.max())


def _token_labels(y: torch.Tensor, where: str) -> torch.Tensor:
    """Integer labels ``(N, L)``, one token per position: ``>= 0``, or -100 (not counted)."""
    labels = y.long()
    if bool(((labels < 0) & (labels != IGNORE_INDEX)).any()):
        raise DistillInputError(
            f"{where}: token labels must be >= 0 or {IGNORE_INDEX} (not counted), found "
            f"{int(labels[labels != IGNORE_INDEX].min())}"
        )
    if not bool((labels != IGNORE_INDEX).any()):
        raise DistillInputError(
            f"{where}: every token label is {IGNORE_INDEX}, so no token is counted; give "
            "the labels of at least one position"
        )
    return labels


def _inputs(x: torch.Tensor, where: str) -> torch.Tensor:
    """Inputs checked and kept: float32 when floating, integer ones (token ids) as they are."""
    if x.ndim < 2 or len(x) == 0:
        raise DistillInputError(f"{where}: inputs need a batch axis and examples, shape "
                                f"{tuple(x.shape)}")  # fmt: skip
    if x.is_floating_point():
        return x.float().contiguous()
    if x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        return x.contiguous()
    raise DistillInputError(f"{where}: inputs of dtype {x.dtype}; give numbers")


def _check_split(x: Any, y: torch.Tensor, where: str) -> TensorDataset | DictInputsDataset:
    if y.ndim == 0:
        raise DistillInputError(f"{where}: labels must have one entry per example, got a scalar")
    if isinstance(x, dict):
        x = {name: _inputs(value, f"{where} {name}") for name, value in x.items()}
    else:
        x = _inputs(x, where)
    counts = {len(value) for value in (x.values() if isinstance(x, dict) else [x])}
    if counts != {len(y)}:
        raise DistillInputError(f"{where}: {', '.join(map(str, sorted(counts)))} inputs but "
                                f"{len(y)} labels")  # fmt: skip
    if y.dtype.is_floating_point:
        labels = y.float()
    elif y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and y.ndim == 1:
        labels = y.long()
        if labels.min() < 0:
            raise DistillInputError(f"{where}: class labels must be >= 0, found {int(y.min())}")
    elif y.dtype in (torch.int64, torch.int32, torch.int16) and y.ndim == 2:
        labels = _token_labels(y, where)
    else:
        raise DistillInputError(
            f"{where}: labels of dtype {y.dtype} and shape {tuple(y.shape)}; give class "
            "indices (one int per example), token labels (N, L) for --loss causal_lm or "
            "token_ce, or float targets"
        )
    if isinstance(x, dict):
        return DictInputsDataset(x, labels.contiguous())
    return TensorDataset(x, labels.contiguous())


def _bundle(
    train: TensorDataset, test: TensorDataset, classes: Any, description: dict
) -> DatasetBundle:
    x_train, y_train = train.tensors
    x_test, y_test = test.tensors
    if example_shape(x_train) != example_shape(x_test):
        raise DistillInputError(
            f"{description['name']} data: train inputs {example_shape(x_train)} and test "
            f"inputs {example_shape(x_test)} differ in shape"
        )
    if y_train.dtype != y_test.dtype or y_train.ndim != y_test.ndim:
        raise DistillInputError(
            f"{description['name']} data: train labels of dtype {y_train.dtype} and shape "
            f"{tuple(y_train.shape)}, test labels of {y_test.dtype} {tuple(y_test.shape)}; "
            "give one kind (class indices, token labels or floats) in both"
        )
    if y_train.dtype == torch.long:
        found = int(max(y_train.max(), y_test.max())) + 1
        if y_train.ndim == 2:  # token ids in the inputs (padding too) belong to the vocabulary
            found = max(found, _largest_id(x_train) + 1, _largest_id(x_test) + 1)
        count = found if classes is None else _class_count(classes, found, description)
    else:
        count = int(y_train.shape[1]) if y_train.ndim == 2 else 1
    description.update(
        n_train=len(y_train), n_test=len(y_test), num_classes=count, normalization=None,
        augment=False, augmentation=None, train_size=None, label_noise=0.0, noisy_labels=0,
    )  # fmt: skip
    shape = example_shape(x_train)
    if isinstance(shape, dict):  # a registry model is fitted to the token ids' shape
        shape = shape.get("input_ids", next(iter(shape.values())))
    return DatasetBundle(train, test, count, shape, description)


def _class_count(classes: Any, found: int, description: dict) -> int:
    values = np.asarray(classes)
    try:
        count = int(values) if values.ndim == 0 else len(values)
    except (TypeError, ValueError) as err:
        raise DistillInputError(
            f"{description['name']} data: classes {values.tolist()!r}: give a class count "
            "or one name per class"
        ) from err
    if values.ndim == 1:
        description["class_names"] = [str(v) for v in values.tolist()]
    if count < found:
        raise DistillInputError(
            f"{description['name']} data: labels go up to {found - 1} but classes says {count}"
        )
    return count


def load_npz(
    path: str | Path, where: str | None = None, sha256: str | None = None
) -> DatasetBundle:
    """A bundle from ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and ``classes``).

    Args:
        path: The ``.npz`` file; only a regular file is opened (:func:`open_regular`).
        where: How messages name the file (default ``--data-file PATH``).
        sha256: The SHA-256 the file must have (a checkpoint's record); checked before
            its arrays are read.

    Raises:
        DistillInputError: No such file, not a regular file, another SHA-256, not an
            ``.npz``, a missing array, arrays that hold objects (never unpickled), or
            arrays of the wrong shape or type.
    """
    path = Path(path).expanduser().resolve()
    where = where or f"--data-file {path}"
    with open_regular(path, where) as handle:
        found = _sha256(handle)
        if sha256 is not None and found != sha256:
            raise DistillInputError(
                f"{where}: changed since the checkpoint was made (SHA-256 differs); pass the "
                "original with --data-file"
            )
        try:
            with np.load(handle, allow_pickle=False) as arrays:
                missing = [name for name in ARRAYS if name not in arrays.files]
                if missing:
                    raise DistillInputError(
                        f"{where}: missing arrays {', '.join(missing)} (it has "
                        f"{', '.join(arrays.files) or 'none'}); need {', '.join(ARRAYS)}"
                    )
                data = {name: arrays[name] for name in ARRAYS}
                data.update({name: arrays[name] for name in arrays.files if name.startswith(EXTRA)})
                classes = arrays["classes"] if "classes" in arrays.files else None
        except DistillInputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise DistillInputError(f"{where}: not a readable .npz of arrays ({err})") from err
    try:
        tensors = {name: torch.from_numpy(np.ascontiguousarray(a, a.dtype.newbyteorder("="))
                                          ) for name, a in data.items()}  # fmt: skip
    except (TypeError, ValueError) as err:
        dtypes = ", ".join(f"{name} {a.dtype}" for name, a in data.items())
        raise DistillInputError(f"{where}: arrays must be numbers ({dtypes})") from err
    train = _check_split(_split_inputs(tensors, "train", where), tensors["y_train"],
                         f"{where} train")  # fmt: skip
    test = _check_split(_split_inputs(tensors, "test", where), tensors["y_test"], f"{where} test")
    description = {"name": "npz", "path": str(path), "sha256": found, "options": {}}
    return _bundle(train, test, classes, description)


def _split_inputs(tensors: dict[str, torch.Tensor], split: str, where: str) -> Any:
    """``x_<split>``, or with ``x_<split>__<name>`` arrays the dict of them all."""
    prefix = f"x_{split}__"
    extra = {name.removeprefix(prefix): t for name, t in tensors.items() if name.startswith(prefix)}
    if not extra:
        return tensors[f"x_{split}"]
    if "input_ids" in extra:
        raise DistillInputError(f"{where}: {prefix}input_ids: x_{split} is the input_ids")
    return {"input_ids": tensors[f"x_{split}"], **extra}


def load_data_spec(spec: str, kwargs: dict[str, Any]) -> DatasetBundle:
    """A bundle from the callable ``spec`` (see the module docstring for what it returns).

    Raises:
        DistillInputError: The spec cannot be imported or called, or returns splits of
            the wrong kind, shape or label type.
    """
    user = import_callable(spec, FLAG)
    result = call_user(user, kwargs, FLAG)
    if isinstance(result, dict) and {"train", "test"} <= set(result):
        train, test, classes = result["train"], result["test"], result.get("classes")
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        (train, test), classes = result, None
    else:
        raise DistillInputError(
            f"{FLAG} {spec}: returned {type(result).__name__}; return (train, test) or "
            "{'train': ..., 'test': ...}"
        )
    train = _check_split(*_as_tensors(train, f"{FLAG} {spec} train"), f"{FLAG} {spec} train")
    test = _check_split(*_as_tensors(test, f"{FLAG} {spec} test"), f"{FLAG} {spec} test")
    description = {"name": "code", "spec": spec, "kwargs": kwargs, "options": {},
                   "source": user.source, "source_sha256": user.source_sha256}  # fmt: skip
    return _bundle(train, test, classes, description)


def data_flag(description: dict[str, Any]) -> str:
    """The ``--data ... [--data-kwargs ...]`` that builds a recorded code dataset again."""
    spec = spec_from_here(description["spec"], description.get("source"))
    flag = f"{FLAG} {shlex.quote(spec)}"
    if description.get("kwargs"):
        flag += f" --data-kwargs {shlex.quote(json.dumps(description['kwargs'], sort_keys=True))}"
    return flag


def user_data_from_description(
    description: dict[str, Any],
    named: str | None,
    named_kwargs: dict[str, Any] | None,
    origin: str | None = None,
) -> DatasetBundle:
    """Rebuild a recorded ``npz`` or ``code`` dataset.

    The file is read again and must have its recorded SHA-256 (checked before its arrays
    are read; a FIFO or device is never opened); code is called only if the user named
    the same spec (``named``), with the recorded kwargs unless new ones are given.
    ``origin`` (``"X header"``) names the checkpoint whose record this is.

    Raises:
        DistillInputError: The file changed or is gone, or the code was not named.
    """
    if description["name"] == "npz":
        path = description["path"]
        where = (f"--data-file {path}" if origin is None
                 else f"{origin} field dataset.path {path}")  # fmt: skip
        return load_npz(path, where=where, sha256=description["sha256"])
    same_name = named is not None and (
        named == description["spec"]
        or (named.rpartition(":")[2] == description["spec"].rpartition(":")[2]
            and description.get("source_sha256"))
    )  # another path to it is checked by its recorded SHA-256 below  # fmt: skip
    if not same_name:
        raise DistillInputError(
            f"the checkpoint's data comes from user code {description['spec']}; pass "
            f"{data_flag(description)} to import it"
        )
    kwargs = description.get("kwargs", {}) if named_kwargs is None else named_kwargs
    bundle = load_data_spec(named, kwargs)
    recorded = description.get("source_sha256")
    if recorded and bundle.description["source_sha256"] != recorded:
        raise DistillInputError(
            f"--data {named}: not the code the checkpoint's data was made with (its file's "
            "SHA-256 differs); name the original file"
        )
    return bundle


def require_class_labels(bundle: DatasetBundle, what: str) -> None:
    """Refuse float or token targets where cross-entropy on class labels is computed."""
    labels = bundle.train.tensors[1]
    if labels.dtype.is_floating_point:
        raise DistillInputError(
            f"{what} uses cross-entropy on class labels, and this data's labels are floats "
            f"({bundle.description['name']}); measure it with hessian/surface/sharpness "
            "--loss mse or your own --loss"
        )
    if labels.ndim == 2:
        raise DistillInputError(
            f"{what} uses cross-entropy on class labels, and this data's labels are tokens "
            f"{tuple(labels.shape[1:])} per example ({bundle.description['name']}); train "
            "with --loss causal_lm or token_ce, and measure with the same --loss"
        )


def check_model_fits(model: torch.nn.Module, bundle: DatasetBundle, what: str) -> None:
    """Run ``model`` on 8 train examples: inputs it takes and an output per class label.

    Refuses, in one line, inputs the model cannot take and class labels beyond its
    outputs (train or test labels of ``max + 1`` classes against fewer logits), before
    ``what`` (training, evaluating) starts. The model's mode is left as it was.

    Raises:
        DistillInputError: The data does not fit the model.
    """
    inputs, labels = bundle.train.tensors
    device = next(model.parameters()).device
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            outputs = logits_of(model.eval(), to_device(take(inputs, slice(0, 8)), device))
    except Exception as err:
        integer = not isinstance(inputs, dict) and not inputs.is_floating_point()
        kept = "; integer inputs are given as they are (token ids): store pixels as floats"
        raise DistillInputError(
            f"{what}: the model cannot take this data's inputs of shape "
            f"{example_shape(inputs)} per example: {describe_error(err)}{kept if integer else ''}"
        ) from err
    finally:
        for module, training in modes:
            module.training = training
    if labels.dtype.is_floating_point:
        return
    if not isinstance(outputs, torch.Tensor) or outputs.ndim < 2:
        shape = (tuple(outputs.shape) if isinstance(outputs, torch.Tensor)
                 else type(outputs).__name__)  # fmt: skip
        raise DistillInputError(
            f"{what}: class labels need one output per class, and the model returns {shape}"
        )
    test = bundle.test.tensors[1]
    classes, per = outputs.shape[1], "example"
    if labels.ndim == 2:  # tokens: the outputs' last axis is the vocabulary
        if outputs.ndim != 3 or tuple(outputs.shape[:2]) != tuple(labels[:8].shape):
            raise DistillInputError(
                f"{what}: token labels of shape {tuple(labels.shape[1:])} per example need "
                f"logits (N, L, V), and the model returns {tuple(outputs.shape)}"
            )
        labels, test = labels[labels != IGNORE_INDEX], test[test != IGNORE_INDEX]
        classes, per = outputs.shape[-1], "position"
    low, top = int(min(labels.min(), test.min())), int(max(labels.max(), test.max()))
    if low < 0 or top >= classes:
        raise DistillInputError(
            f"{what}: the labels go from {low} to {top}, and the model gives "
            f"{classes} outputs per {per}; labels must be 0 .. {classes - 1}"
        )
