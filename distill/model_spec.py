"""Which network to build: a registry name (``resnet20``) or user code the user named.

A checkpoint records the spec as its ``arch``, with ``arch_kwargs`` and, for user code,
``model_source`` (the file and its SHA-256). Rebuilding a registry model needs nothing
more; rebuilding from user code needs the user to name the same spec again
(:func:`require_named`), so opening a file never imports code by itself.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from torch import nn

from distill.errors import DistillInputError
from distill.models import build_model
from distill.user_code import call_user, import_callable, is_code_spec

FLAG = "--model"


def build_from_spec(arch: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any] | None]:
    """The network ``arch`` with ``kwargs``, and where its code came from (None: registry).

    Raises:
        DistillInputError: An unknown registry name, code that cannot be imported or
            called with ``kwargs``, or a callable that returns no ``nn.Module``.
    """
    if not is_code_spec(arch):
        return build_model(arch, **kwargs), None
    user = import_callable(arch, FLAG)
    model = call_user(user, kwargs, FLAG)
    if not isinstance(model, nn.Module):
        raise DistillInputError(
            f"{FLAG} {arch}: returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model, user.provenance()


def model_flag(arch: str, kwargs: dict[str, Any] | None = None) -> str:
    """The ``--model ... [--model-kwargs ...]`` a user passes to build ``arch`` again."""
    flag = f"{FLAG} {shlex.quote(arch)}"
    if kwargs:
        flag += f" --model-kwargs {shlex.quote(json.dumps(kwargs, sort_keys=True))}"
    return flag


def require_named(meta: dict[str, Any], named: str | None, path: str) -> None:
    """Refuse to rebuild a user-code model unless the user named its spec again.

    The named spec must be the recorded one, or name the same attribute in a file with
    the recorded SHA-256 (the same code, moved).

    Raises:
        DistillInputError: The checkpoint was made from user code and ``named`` is None
            or another model; the message holds the exact flag to pass.
    """
    arch = meta["arch"]
    if not is_code_spec(arch):
        return
    if named is None:
        raise DistillInputError(
            f"{path}: made from user code {arch}; pass {model_flag(arch)} to import it "
            "(flatscape never imports code that a checkpoint names by itself)"
        )
    if named == arch:
        return
    recorded = (meta.get("model_source") or {}).get("source_sha256")
    same_attribute = named.rpartition(":")[2] == arch.rpartition(":")[2]
    if same_attribute and recorded and import_callable(named, FLAG).source_sha256 == recorded:
        return
    raise DistillInputError(
        f"{path}: made with {arch}, not {named}; pass {model_flag(arch)} (or a copy of that "
        "file, unchanged)"
    )
