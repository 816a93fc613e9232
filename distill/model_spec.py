"""Which network to build: a registry name (``resnet20``) or user code the user named.

A checkpoint records the spec as its ``arch``, with ``arch_kwargs`` and, for user code,
``model_source`` (the file and its SHA-256). Rebuilding a registry model needs nothing
more; rebuilding from user code needs the user to name the same spec again
(:func:`require_named`), so opening a file never imports code by itself. A Hugging
Face folder (``hf:DIR``, :mod:`distill.hf_model`) is user code too: named again, with
the same ``config.json``.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from torch import nn

from distill.errors import DistillInputError
from distill.hf_model import build_hf_model, is_hf_spec, require_same_config
from distill.models import build_model
from distill.user_code import call_user, import_callable, is_code_spec, spec_from_here

FLAG = "--model"


def build_from_spec(arch: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any] | None]:
    """The network ``arch`` with ``kwargs``, and where its code came from (None: registry).

    ``arch`` is a registry name, a code spec, or ``hf:DIR``
    (:func:`distill.hf_model.build_hf_model`: the folder's model with its weights).

    Raises:
        DistillInputError: An unknown registry name, code that cannot be imported or
            called with ``kwargs``, or a callable that returns no ``nn.Module``.
    """
    if not is_code_spec(arch):
        return build_model(arch, **kwargs), None
    if is_hf_spec(arch):
        return build_hf_model(arch, kwargs)
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


def require_named(meta: dict[str, Any], named: str | None, path: str) -> str:
    """The spec to rebuild a checkpoint's model from: never code the user did not name.

    A registry model is rebuilt from its recorded name (``named``, if given, must be that
    name). A model from user code is rebuilt from ``named`` only: the same attribute as
    recorded, in a file whose SHA-256 is the recorded one (the same code, or a copy of it
    moved elsewhere). The recorded path itself is never imported unless it is the one
    named.

    Raises:
        DistillInputError: ``named`` is missing for user code, names other code, or names a
            file that changed since the checkpoint was made; the message holds the flag.
    """
    arch = meta["arch"]
    if is_hf_spec(arch):
        return require_same_config(meta, named, path)
    here = spec_from_here(arch, (meta.get("model_source") or {}).get("source"))
    if not is_code_spec(arch):
        if named is not None and named != arch:
            raise DistillInputError(
                f"{path}: records its model ({arch}); drop --model {named} or name {arch}"
            )
        return arch
    if named is None:
        raise DistillInputError(
            f"{path}: made from user code {arch}; pass {model_flag(here)} to import it "
            "(flatscape never imports code that a checkpoint names by itself)"
        )
    if named.rpartition(":")[2] != arch.rpartition(":")[2]:
        raise DistillInputError(f"{path}: made with {arch}, not {named}; pass {model_flag(here)}")
    recorded = (meta.get("model_source") or {}).get("source_sha256")
    found = import_callable(named, FLAG).source_sha256
    if recorded and found != recorded:
        raise DistillInputError(
            f"{path}: --model {named} is not the code it was made with (its file's SHA-256 "
            f"differs from the recorded {recorded[:12]}...); name the original file"
        )
    return named
