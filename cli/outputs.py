"""Every file a command writes, settled before it works, and written so that nothing is lost.

Before any work a command lists the files and folders it will write and the files it
reads (:class:`OutputPlan`). :meth:`OutputPlan.check` then refuses, in one line and
before anything is computed or written:

- an empty name, a folder given for a file, a file given for a folder;
- two outputs on one path (``--out x --json x``), however the path is spelled;
- an output that is one of the inputs (``--json victim.safetensors``), even with ``--force``;
- an existing result, unless ``--force`` (or ``--resume`` for a resumable file);
- an output on a read-only file system or in a folder the user may not write.

Results are then written whole or not at all (:func:`write_text_output`): a full disk
removes the temporary file and leaves the old result, and :func:`write_json` prints a
report it could not save on stdout, so minutes of measurement are not lost.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from distill.errors import DistillInputError


class OutputError(DistillInputError):
    """An output that cannot or must not be written: one line, exit code 2."""


@dataclass(frozen=True)
class Output:
    """One file or folder a command writes, and the flag that named it."""

    flag: str
    path: Path
    folder: bool = False
    resumable: bool = False
    members: tuple[str, ...] = ()
    """For a folder: the names it writes inside (only these count as existing results)."""


@dataclass
class OutputPlan:
    """The files a command will write and read, checked as a whole before any work.

    Args:
        force: ``--force``: existing results may be replaced.
        resume: ``--resume``: an existing resumable file is continued, not refused.
    """

    force: bool = False
    resume: bool = False
    outputs: list[Output] = field(default_factory=list)
    inputs: list[tuple[str, Path]] = field(default_factory=list)

    def file(self, flag: str, path: str | Path | None, *, resumable: bool = False) -> Path | None:
        """Add an output file (None: not asked for; ``-``: stdout); return it as a Path."""
        if path is None or str(path) == "-":
            return None if path is None else Path("-")
        if str(path).strip() == "":
            raise OutputError(f"{flag} '': give a file name")
        if str(path).endswith(os.sep):
            raise OutputError(f"{flag} {path} ends in {os.sep}, as a folder does; give a file name")
        self.outputs.append(Output(flag, Path(path), resumable=resumable))
        return Path(path)

    def folder(
        self,
        flag: str,
        path: str | Path | None,
        members: Iterable[str] = (),
        *,
        resumable: bool = False,
    ) -> Path | None:
        """Add an output folder and the names written inside it (``resumable``: reused)."""
        if path is None:
            return None
        if str(path).strip() == "":
            raise OutputError(f"{flag} '': give a folder name")
        output = Output(flag, Path(path), folder=True, resumable=resumable, members=tuple(members))
        self.outputs.append(output)
        return Path(path)

    def read(self, flag: str, *paths: str | Path | None) -> None:
        """Add input files or folders: no output may be one of them."""
        self.inputs += [(flag, Path(p)) for p in paths if p is not None and str(p) != ""]

    def read_checkpoints(self, flag: str, *paths: str | Path | None) -> None:
        """Add checkpoints as inputs, and the data files their headers record (read again)."""
        self.read(flag, *paths)
        for path in paths:
            if path is not None:
                self.read(f"(the data recorded in {path})", _recorded_data_file(Path(path)))

    def read_sources(self, sources: Any) -> None:
        """Add the files a :class:`distill.sources.Sources` names: data and code files."""
        self.read("--data-file", sources.data_file)
        for flag, spec in (("--model", sources.model), ("--data", sources.data)):
            if spec and ".py:" in spec:
                self.read(flag, spec.rsplit(":", 1)[0])
        if sources.model and sources.model.startswith("hf:"):  # a save_pretrained folder
            from distill.hf_model import CONFIG_FILE, PREFIX, WEIGHT_FILES

            folder = Path(sources.model[len(PREFIX) :])
            self.read("--model", *(folder / name for name in (CONFIG_FILE, *WEIGHT_FILES)))

    def check(self) -> None:
        """Refuse the plan (:class:`OutputError`) unless every output may be written."""
        seen: dict[tuple, Output] = {}
        inputs = {_identity(path): (flag, path) for flag, path in self.inputs}
        for output in self._expanded():
            key = _identity(output.path)
            if key in seen:
                other = seen[key]
                raise OutputError(
                    f"{other.flag} and {output.flag} both name {output.path}; give each its "
                    "own file"
                )
            seen.setdefault(key, output)
            if key in inputs:
                flag, path = inputs[key]
                raise OutputError(
                    f"{output.flag} {output.path} is the input {flag} {path}; write the "
                    "result to another file"
                )
            self._check_kind(output)
            self._check_existing(output)
            _check_writable(output)
        for output in self.outputs:
            if output.folder:
                _lock_folder(output)

    def _expanded(self) -> list[Output]:
        """Every output, a folder's members as files of their own."""
        expanded = []
        for output in self.outputs:
            expanded.append(output)
            expanded += [
                Output(f"{output.flag} ({name})", output.path / name, resumable=output.resumable)
                for name in output.members
            ]
        return expanded

    def _check_kind(self, output: Output) -> None:
        path = output.path
        if output.folder and path.exists() and not path.is_dir():
            raise OutputError(f"{output.flag} {path} is a file; give a folder")
        if not output.folder and path.is_dir():
            raise OutputError(f"{output.flag} {path} is a folder; give a file name")
        parent = _existing_ancestor(path.parent)
        if not parent.is_dir():
            raise OutputError(f"{output.flag} {path}: {parent} is a file, not a folder")
        if not output.folder and path.exists() and not path.is_file():
            raise OutputError(f"{output.flag} {path} is not a regular file; give a file name")

    def _check_existing(self, output: Output) -> None:
        if output.folder or not output.path.exists() or self.force:
            return
        if output.resumable:
            if not self.resume:
                raise OutputError(
                    f"{output.path} exists; pass --resume to continue it or --force to start anew"
                )
            return
        raise OutputError(f"{output.path} exists; pass --force to overwrite it")


def _lock_folder(output: Output) -> None:
    """Create the folder and hold a lock on it until the command ends.

    Two commands writing one folder (two compares into one ``--plots``, two reproduce
    runs into one ``--out-dir``) would interleave their files; the second is refused.
    """
    created = not output.path.exists()
    try:
        output.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(output.path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise OutputError(f"cannot write {output.flag} {output.path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(
            f"{output.flag} {output.path} is being written by another flatscape command; wait "
            "for it to finish or choose another folder"
        ) from None

    def release() -> None:
        os.close(fd)
        if created:  # a command refused after its plan leaves no empty folder behind
            with suppress(OSError):
                output.path.rmdir()

    context = click.get_current_context(silent=True)
    if context is None:  # not a command: nothing to hold the lock for
        release()
    else:
        context.call_on_close(release)  # released when the command ends


def _recorded_data_file(checkpoint: Path) -> str | None:
    """The ``.npz`` a flatscape checkpoint's header records as its data, if any."""
    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("flatscape", "null"))
    except Exception:  # not a flatscape file, or damaged: its reader will say so
        return None
    data = meta.get("dataset") if isinstance(meta, dict) else None
    if isinstance(data, dict) and data.get("name") == "npz" and isinstance(data.get("path"), str):
        return data["path"]
    return None


def _identity(path: Path) -> tuple:
    """One key per file, however it is named (symlinks, ``..``, hard links)."""
    try:
        stat = path.stat()
        return ("inode", stat.st_dev, stat.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above (or at) ``path`` that exists: where creating starts."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(output: Output) -> None:
    """Refuse an output the file system will not let us write, before any work."""
    target = output.path if output.path.exists() else _existing_ancestor(output.path.parent)
    folder = target if target.is_dir() else target.parent
    if may_write(folder) and (not output.path.is_file() or may_write(output.path)):
        return
    code = errno.EROFS if read_only(folder) else errno.EACCES
    raise OutputError(f"cannot write {output.flag} {output.path}: {os.strerror(code)}")


def may_write(path: Path) -> bool:
    """Whether this process may write ``path`` (a folder: create files in it)."""
    return os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0))


def read_only(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def write_text_output(path: Path | None, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (``-``: stdout; None: nothing)."""
    from landscape.atomic_files import write_bytes_atomically

    if path is None:
        return
    if str(path) == "-":
        sys.stdout.write(text)
        return
    write_bytes_atomically(path, text.encode())


def os_error_text(err: OSError) -> str:
    """One line for an error of the file system: the path, then the cause."""
    reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
    return f"{err.filename}: {reason}" if err.filename else reason


@contextmanager
def report_kept_on_failure(document: dict[str, Any]) -> Iterator[None]:
    """Writing the outputs of a finished measurement: if the disk refuses, print the report.

    Raises:
        OutputError: a write failed (the report is on stdout).
    """
    try:
        yield
    except OSError as err:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        sys.stdout.flush()
        raise OutputError(
            f"cannot write {os_error_text(err)}; the report was printed on stdout instead"
        ) from None


def write_json(path: Path | None, document: dict[str, Any]) -> None:
    """Write a JSON report (``-``: stdout); if the disk refuses, print it on stdout instead.

    Raises:
        OutputError: the file could not be written (the report is on stdout).
    """
    text = json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"
    with report_kept_on_failure(document):
        write_text_output(path, text)
