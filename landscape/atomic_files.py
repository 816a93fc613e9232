"""Files written whole or not at all: a temporary file beside the target, renamed into place.

A write that fails (a full or read-only disk, a quota, a lost permission) removes the
temporary file and raises :class:`OSError` naming the target, not the temporary name, so
that the user is told which of their files could not be written and nothing half-written
or stray is left behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def temporary_name(out: Path) -> Path:
    """The hidden name ``out`` is written under before it is renamed into place."""
    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


@contextmanager
def replaced_atomically(out: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """A temporary file beside ``out``, renamed to ``out`` only when writing succeeded.

    Raises:
        OSError: writing failed; ``filename`` is ``out`` and the temporary file is gone.
    """
    out = Path(out)
    tmp = temporary_name(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            _flush_to_disk(handle)
        os.replace(tmp, out)
    except OSError as err:
        raise naming(err, out) from None
    finally:
        with suppress(OSError):
            tmp.unlink()


def _flush_to_disk(handle: IO[Any]) -> None:
    """Push the file's bytes to the disk, so that a full disk fails here, before the rename."""
    handle.flush()
    os.fsync(handle.fileno())


def write_bytes_atomically(out: str | Path, data: bytes) -> None:
    """Write ``data`` to ``out`` whole or not at all (see :func:`replaced_atomically`)."""
    with replaced_atomically(out, "wb") as handle:
        handle.write(data)


def naming(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name and a plain reason (one line)."""
    code = err.errno if err.errno is not None else _errno_in(str(err))
    reason = os.strerror(code) if code else (str(err).splitlines() or [type(err).__name__])[0]
    return OSError(code, reason, str(path))


def _errno_in(text: str) -> int | None:
    """The errno a library (HDF5) wrote into its message, e.g. ``errno = 28``."""
    for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EFBIG, errno.EIO):
        if f"errno = {code}," in text or f"[Errno {code}]" in text:
            return code
    return None


def save_figure(fig: Any, out: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` into ``out`` whole or not at all, the format named by its suffix."""
    out = Path(out)
    kwargs.setdefault("format", out.suffix.lstrip(".").lower() or None)
    with replaced_atomically(out, "wb") as handle:
        fig.savefig(handle, **kwargs)
    return out


def write_text_atomically(out: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``out`` whole or not at all."""
    write_bytes_atomically(out, text.encode())
