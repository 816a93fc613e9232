"""How distill calls a model: its inputs as it takes them, its logits by one rule.

The twin of :func:`landscape._types.call_model` and :func:`landscape._types.model_outputs`
(distill never imports landscape; ``tests/distill/test_model_call.py`` holds the two to the
same answers). Inputs are a tensor or a dict of tensors (``input_ids``, ``attention_mask``)
with the examples on the first axis; they are never cast.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import DistillInputError


def _takes_keywords(model: nn.Module, keys: Any) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return True
    return set(keys) <= {p.name for p in parameters if p.kind is not p.VAR_POSITIONAL}


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict whose keys ``forward`` names, else ``model(inputs)``."""
    if isinstance(inputs, Mapping) and _takes_keywords(model, inputs.keys()):
        return model(**inputs)
    return model(inputs)


def model_outputs(raw: Any, key: str | None = None) -> Tensor:
    """The output's ``key`` (default ``logits``) attribute or entry, else its first tensor."""
    if isinstance(raw, Tensor) and key is None:
        return raw
    if isinstance(raw, Mapping):
        found = raw.get(key or "logits")
        if found is None and key is None:
            found = next((v for v in raw.values() if v is not None), None)
    elif isinstance(raw, list | tuple):
        found = raw[0] if raw and key is None else None
    else:
        found = getattr(raw, key or "logits", None)
        fields = getattr(raw, "__dataclass_fields__", None)
        if found is None and key is None and fields:
            found = next((getattr(raw, f) for f in fields if getattr(raw, f) is not None), None)
    if not isinstance(found, Tensor):
        what = f"no {key!r}" if key else "no logits and no first tensor"
        raise DistillInputError(
            f"model output of type {type(raw).__name__}: {what}; name the tensor with --output-key"
        )
    return found


def logits_of(model: nn.Module, inputs: Any) -> Tensor:
    """The model's logits on ``inputs``: :func:`call_model`, then :func:`model_outputs`."""
    return model_outputs(call_model(model, inputs))


def select_output(model: nn.Module, key: str) -> None:
    """Make ``model`` return its output ``key`` (``--output-key``), by a forward hook."""
    model.register_forward_hook(lambda _module, _args, raw: model_outputs(raw, key))


def take(inputs: Any, index: Any) -> Any:
    """Examples ``index`` (a slice or index tensor) of a tensor or a dict of tensors."""
    if isinstance(inputs, Mapping):
        return {name: value[index] for name, value in inputs.items()}
    return inputs[index]


def to_device(inputs: Any, device: torch.device | str) -> Any:
    """A tensor or dict of tensors on ``device``, dtypes unchanged."""
    if isinstance(inputs, Mapping):
        return {name: value.to(device) for name, value in inputs.items()}
    return inputs.to(device)


def example_count(inputs: Any) -> int:
    """How many examples: the first axis of the tensor, or of a dict's first tensor."""
    first = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs
    return len(first)


def example_shape(inputs: Any) -> Any:
    """One example's shape; for a dict, ``{name: shape}``."""
    if isinstance(inputs, Mapping):
        return {name: tuple(value.shape[1:]) for name, value in inputs.items()}
    return tuple(inputs.shape[1:])
