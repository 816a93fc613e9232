"""A verified on-disk cache for generated datasets (MNIST-1D takes seconds to generate).

An entry is one ``.npz`` file under ``$FLATSCAPE_CACHE`` (default
``$XDG_CACHE_HOME/flatscape`` or ``~/.cache/flatscape``), named by the SHA-256 of its key:
the generator, its options, the generator package's version and this cache's schema. The
file holds the arrays and a ``__meta__`` record with the key and the SHA-256 of every
array. An entry is used only when it loads, its key equals the one asked for and every
array's hash matches; anything else (truncated, tampered, another version) is generated
anew and replaced. Only a regular file is read (checked before it is read, so a FIFO
never blocks a command); a FIFO, socket or folder at an entry's path is a miss that is
left where it is, and the data is generated on every call. Files are written under a
temporary name and renamed into place, so a reader never sees half an entry and two
processes filling one entry each write a whole file (the generators are deterministic:
the same bytes). Nothing is ever unpickled.

``FLATSCAPE_CACHE=off`` (or ``flatscape --no-cache``) turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SCHEMA = 1
VARIABLE = "FLATSCAPE_CACHE"
META = "__meta__"


def cache_dir() -> Path | None:
    """Where entries live, or None when the cache is off."""
    configured = os.environ.get(VARIABLE)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "no") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flatscape"


def _digest(array: np.ndarray) -> str:
    contiguous = np.ascontiguousarray(array)
    return hashlib.sha256(
        f"{contiguous.dtype.str}{contiguous.shape}".encode() + contiguous.tobytes()
    ).hexdigest()


def _entry_path(folder: Path, key: dict[str, Any]) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return folder / f"{key['generator']}-{name}.npz"


def _open_regular(path: Path) -> BinaryIO | None:
    """``path`` opened for reading if it is a regular file, else None.

    Opened non-blocking and checked with ``fstat`` before anything is read: a FIFO
    would make a plain ``open`` wait for a writer forever, a device could be read forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _is_foreign(path: Path) -> bool:
    """Whether something other than a regular file or a link sits at ``path``."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))


def _read(path: Path, key: dict[str, Any], names: tuple[str, ...]) -> tuple[np.ndarray, ...] | None:
    """The entry's arrays if it is whole and is what ``key`` asks for, else None."""
    handle = _open_regular(path)
    if handle is None:
        return None
    try:
        with handle, np.load(handle, allow_pickle=False) as entry:
            meta = json.loads(bytes(entry[META]).decode())
            arrays = tuple(entry[name] for name in names)
    except Exception:  # truncated, not a zip, a missing array: not trusted
        return None
    if meta.get("key") != key or meta.get("names") != list(names):
        return None
    if meta.get("sha256") != [_digest(a) for a in arrays]:
        return None
    return arrays


def _write(path: Path, key: dict[str, Any], names: tuple[str, ...], arrays: tuple) -> None:
    """Write the entry whole under a temporary name, then rename it into place."""
    meta = {"key": key, "names": list(names), "sha256": [_digest(a) for a in arrays]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                **dict(zip(names, arrays, strict=True)),
                **{META: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)},
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_arrays(
    key: dict[str, Any], names: tuple[str, ...], make: Callable[[], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    """The arrays ``make()`` returns, from the cache when a verified entry exists.

    Args:
        key: JSON-able description of what ``make`` generates; must hold ``generator``.
        names: One name per array ``make`` returns.
        make: The generator, called on a miss (or with the cache off).

    A cache folder that cannot be written (read-only, full disk) only costs the saving;
    an entry that is not a regular file is neither read nor replaced.
    """
    folder = cache_dir()
    if folder is None:
        return make()
    key = {**key, "schema": SCHEMA}
    path = _entry_path(folder, key)
    found = _read(path, key, names)
    if found is not None:
        return found
    arrays = tuple(np.asarray(a) for a in make())
    if _is_foreign(path):  # a FIFO, socket or folder someone put there: not ours to replace
        return arrays
    with suppress(OSError):  # the data is right; only the saving failed
        _write(path, key, names, arrays)
    return arrays
