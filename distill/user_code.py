"""Code the user named on the command line: ``package.module:callable`` or ``file.py:callable``.

This is the one place flatscape imports code that is not its own, and it does so only for
a spec the user wrote (``--model``, ``--data``, ``--loss``); a checkpoint that records a
spec never causes an import by itself. Every failure (no such file or module, an import
that raises, a missing or non-callable attribute, keyword arguments that are not JSON or
not accepted, a callable that raises) is one :class:`DistillInputError` line naming the
spec.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import DistillInputError


@dataclass(frozen=True)
class UserCallable:
    """A callable imported from a spec, with where it came from.

    Attributes:
        spec: The spec as the user wrote it.
        function: The callable.
        source: The file that defines it (None for built-ins and C extensions).
        source_sha256: SHA-256 of that file's bytes (None without a file).
    """

    spec: str
    function: Callable[..., Any]
    source: str | None
    source_sha256: str | None

    def provenance(self) -> dict[str, str | None]:
        """``{"spec", "source", "source_sha256"}`` for a checkpoint or report."""
        return {"spec": self.spec, "source": self.source, "source_sha256": self.source_sha256}


def is_code_spec(text: str) -> bool:
    """Whether ``text`` names code (``x:y``) rather than a registry entry."""
    return ":" in text


def spec_from_here(spec: str, source: str | None) -> str:
    """``spec`` as the user can name it from the current folder.

    A ``file.py:callable`` spec recorded with a relative path names another file (or
    none) from another folder; then the recorded ``source`` file is named instead,
    relative to here when it lies below, else by its absolute path.
    """
    where, _, attr = spec.rpartition(":")
    if not source or not where.endswith(".py") or Path(where).resolve() == Path(source):
        return spec
    relative = os.path.relpath(source)
    return f"{source if relative.startswith('..') else relative}:{attr}"


def parse_json_kwargs(text: str | None, flag: str) -> dict[str, Any]:
    """Keyword arguments from a JSON object given on the command line (``{}`` when None)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DistillInputError(f"{flag} {text!r}: not JSON ({err.msg})") from err
    if not isinstance(value, dict):
        raise DistillInputError(f"{flag} {text!r}: give a JSON object, e.g. '{{\"width\": 64}}'")
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_file(path: Path, spec: str) -> Any:
    """Import a ``.py`` file as a module named after its contents' hash.

    The file's folder leads ``sys.path`` while it is imported, as when Python runs the file,
    so it can import the modules beside it (``from mycnn import Block``).
    """
    if not path.is_file():
        raise DistillInputError(f"{spec}: no file {path}")
    name = f"flatscape_user_{_sha256(path)[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise DistillInputError(f"{spec}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # argparse at import time exits
        del sys.modules[name]
        raise DistillInputError(f"{spec}: importing {path} raised {describe_error(err)}") from err
    finally:
        sys.path.remove(folder)
    return module


def _import_module(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise DistillInputError(
            f"{spec}: no module {err.name!r} (install it, or name a file: path/to/file.py:name)"
        ) from err
    except (Exception, SystemExit) as err:
        raise DistillInputError(f"{spec}: importing {name} raised {describe_error(err)}") from err


def describe_error(err: BaseException) -> str:
    """``"TypeError: first line of the message"``, for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def import_callable(spec: str, flag: str) -> UserCallable:
    """Import the callable named by ``spec`` (``module:attr`` or ``file.py:attr``).

    Args:
        spec: ``package.module:callable`` or ``path/to/file.py:callable``; the attribute
            may be dotted (``module:Class.build``).
        flag: The option it came from, for messages (``--model``).

    Raises:
        DistillInputError: The module or file cannot be imported, or has no such
            callable.
    """
    where, sep, attribute = spec.rpartition(":")
    if not sep or not where or not attribute:
        raise DistillInputError(
            f"{flag} {spec!r}: write package.module:callable or file.py:callable"
        )
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        module = _import_file(path, f"{flag} {spec}")
    else:
        module = _import_module(where, f"{flag} {spec}")
        path = Path(module.__file__).resolve() if getattr(module, "__file__", None) else None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise DistillInputError(f"{flag} {spec}: {where} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise DistillInputError(f"{flag} {spec}: {attribute} is not callable")
    sha = _sha256(path) if path is not None and path.is_file() else None
    return UserCallable(spec, value, None if path is None else str(path), sha)


def call_user(user: UserCallable, kwargs: dict[str, Any], flag: str) -> Any:
    """``user.function(**kwargs)``, with its failures as one line naming the spec."""
    try:
        return user.function(**kwargs)
    except TypeError as err:
        raise DistillInputError(
            f"{flag} {user.spec}: called with {json.dumps(kwargs)}: {describe_error(err)}"
        ) from err
    except (Exception, SystemExit) as err:
        raise DistillInputError(f"{flag} {user.spec}: raised {describe_error(err)}") from err
