"""HDF5 files of loss surfaces, written point block by point block, resumable and locked.

Layout (loss-landscape's key names, so its ``plot_1D.py``/``plot_2D.py`` read our files):

=================================  =====================  ==========================================
key                                shape                  meaning
=================================  =====================  ==========================================
``xcoordinates``                   ``(nx,)``              x of the grid
``ycoordinates``                   ``(ny,)``              y of the grid (2D only)
``train_loss``, ``train_acc``      ``(nx,)``/``(ny, nx)`` row ``j``, column ``i``: point (x_i, y_j)
``test_loss``, ``test_acc``        same                   when the split is ``test`` or ``both``
``done``                           same, bool             which points are final
``directions/x/<name>``            parameter shape        the exact directions used
``directions/y/<name>``            parameter shape        2D only
``marks/...``, ``paths/...``       see docs/formats.md    models marked on the plane (optional)
=================================  =====================  ==========================================

A file made with ``quantities`` (an eigenvalue map) holds those value arrays instead of
``<split>_loss``/``<split>_acc``; their names are the root attribute ``quantities``.

Root attributes: ``flatscape_schema``, ``axis_order = "y,x"``, the settings the surface was
made with (compared on resume) and informational ones (versions; not compared).

Crash safety: the file is built complete (every array allocated and filled with NaN) under
a temporary name and renamed into place; afterwards a run only overwrites raw array bytes
in place, values first, then (after a flush) the ``done`` flags. A process killed at any
moment leaves a readable file whose ``done`` points are final. One writer at a time: an
exclusive ``fcntl`` lock on ``<file>.lock`` is held for the whole run.
"""

from __future__ import annotations

import fcntl
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape.atomic_files import naming, write_bytes_atomically
from landscape.errors import LandscapeInputError
from landscape.surface.directions import Direction
from landscape.surface.evaluate import PointValues

SCHEMA = 1
SPLITS = {"train": ("train",), "test": ("test",), "both": ("train", "test")}
AXES = ("x", "y")


@dataclass
class SurfaceSpec:
    """Everything that defines a surface file before any point is computed.

    Args:
        x: x coordinates.
        y: y coordinates, or None for a 1D curve.
        directions: One direction per axis.
        split: ``"train"``, ``"test"`` or ``"both"``.
        settings: Scalar attributes a resumed run must match (checkpoint hash,
            normalization, ignore, seed, dataset, samples, bn_mode, ...).
        info: Scalar attributes recorded but not compared (versions, paths).
        extra: Arrays written once with the file, by HDF5 path (e.g. ``marks/coordinates``):
            what the surface shows besides its grid (checkpoints on a plane, paths).
        quantities: Names of the value arrays, when they are not the loss and accuracy of
            each split (e.g. ``("lambda_max", "lambda_min")``).
    """

    x: np.ndarray
    y: np.ndarray | None
    directions: Sequence[Mapping[str, torch.Tensor]]
    split: str = "train"
    settings: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    quantities: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """``(nx,)`` or ``(ny, nx)``."""
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))


class SurfaceStore:
    """An open surface file: read its arrays, or (when opened for writing) fill its points.

    Use :meth:`open_for_writing` to create or resume a file and :meth:`read` to look at
    one; both refuse corrupted or foreign files with :class:`LandscapeInputError`.
    """

    def __init__(self, path: Path, file: h5py.File, lock_fd: int | None = None) -> None:
        self.path = path
        self.file = file
        self._lock_fd = lock_fd
        with _closed_on_error(file), _damaged(path):
            self._validate()
            self.x = np.asarray(file["xcoordinates"][...], dtype=np.float64)
            self.y = (
                np.asarray(file["ycoordinates"][...], dtype=np.float64)
                if "ycoordinates" in file
                else None
            )
            self.done = np.asarray(file["done"][...], dtype=bool)
            self.arrays = {key: np.asarray(file[key][...]) for key in self.value_keys}

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path) -> SurfaceStore:
        """Open a surface file read-only (also while another process is writing it)."""
        path = Path(path)
        if not path.exists():
            raise LandscapeInputError(f"{path}: no such surface file")
        return cls(path, _open_h5(path, "r"))

    @classmethod
    def open_for_writing(
        cls, path: str | Path, spec: SurfaceSpec, resume: bool = False, force: bool = False
    ) -> SurfaceStore:
        """Create a surface file, or reopen it to continue a run; hold its lock until closed.

        Args:
            path: The ``.h5`` file.
            spec: The grid, directions and settings of the run.
            resume: Continue the file when it exists (refused if made with other settings);
                create it when it does not.
            force: Replace an existing file with a new one (the old one stays until the new
                one is complete).

        Raises:
            LandscapeInputError: The file exists without ``resume``/``force``, another
                process writes it, it is damaged or foreign, or its settings differ.
        """
        path = Path(path)
        if resume and force:
            raise LandscapeInputError("--resume and --force contradict; choose one")
        if spec.split not in SPLITS:
            raise LandscapeInputError(f"split {spec.split!r}: choose train, test or both")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire_lock(path)
        try:
            if path.exists() and not (resume or force):
                raise LandscapeInputError(
                    f"{path} exists; pass --resume to continue it or --force to start anew"
                )
            if not path.exists() or force:
                _create(path, spec)
            else:
                cls.read(path).close()  # validate read-only: a foreign file stays untouched
            store = cls(path, _open_h5(path, "r+"), fd)
        except BaseException:
            _release_lock(path, fd)
            raise
        try:
            store.check_matches(spec)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the file and release the write lock."""
        with suppress(Exception):
            self.file.close()
        if self._lock_fd is not None:
            _release_lock(self.path, self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SurfaceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- contents --------------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes as plain Python values."""
        return {k: _plain(v) for k, v in self.file.attrs.items()}

    @property
    def shape(self) -> tuple[int, ...]:
        """``(nx,)`` or ``(ny, nx)``."""
        return self.done.shape

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the file holds (``train``, ``test`` or both)."""
        return SPLITS[str(self.file.attrs["split"])]

    @property
    def value_keys(self) -> list[str]:
        """The keys of the value arrays, e.g. ``train_loss``, ``train_acc``."""
        quantities = _plain(self.file.attrs.get("quantities", ""))
        return stored_keys(self.splits, quantities.split(",") if quantities else None)

    @property
    def made_by(self) -> str:
        """The command that makes (and resumes) this kind of file."""
        return made_by_command(_plain(self.file.attrs.get("quantities", "")) or None)

    def extra(self, prefix: str) -> dict[str, np.ndarray]:
        """The extra arrays under ``prefix`` (e.g. ``"marks"``) by relative path; {} if none.

        Strings come back as ``str``.
        """
        group = self.file.get(prefix)
        if not isinstance(group, h5py.Group):
            return {}
        found: dict[str, np.ndarray] = {}

        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                data = item.asstr()[...] if h5py.check_string_dtype(item.dtype) else item[...]
                found[name] = np.asarray(data)

        with _damaged(self.path):
            group.visititems(visit)
        return found

    def pending(self) -> np.ndarray:
        """Flat indices (row-major over ``shape``) of the points not yet final."""
        return np.flatnonzero(~self.done.reshape(-1))

    def directions(self) -> list[Direction]:
        """The stored directions as CPU tensors, one per axis."""
        with _damaged(self.path):
            return [
                {name: torch.from_numpy(ds[...]) for name, ds in self.file["directions"][a].items()}
                for a in AXES[: len(self.shape)]
            ]

    # -- writing ---------------------------------------------------------------------------

    def write(self, indices: np.ndarray, values: Mapping[str, PointValues]) -> None:
        """Store finished points: values first, flushed, then their ``done`` flags, flushed.

        ``values`` holds one :class:`PointValues` per split.
        """
        self.write_arrays(
            indices,
            {f"{s}_{q}": getattr(values[s], q) for s in self.splits for q in ("loss", "acc")},
        )

    def write_arrays(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Store finished points given as one array per value key (see :attr:`value_keys`)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        missing = [key for key in self.value_keys if key not in values]
        if missing:
            raise LandscapeInputError(f"{self.path}: no values given for {', '.join(missing)}")
        rows = self._rows(indices)
        try:
            for key in self.value_keys:
                self.arrays[key].reshape(-1)[indices] = values[key]
                self.file[key][rows] = self.arrays[key][rows]
            self.file.flush()
            self.done.reshape(-1)[indices] = True
            self.file["done"][rows] = self.done[rows]
            self.file.flush()
        except OSError as err:  # the points flagged done before this block are on disk
            raise naming(err, self.path) from None

    def check_matches(self, spec: SurfaceSpec) -> None:
        """Refuse to continue a file made with other settings, grid or directions."""

        def differ(what: str, old: Any, new: Any) -> LandscapeInputError:
            return LandscapeInputError(
                f"{self.path} was made with other settings ({what}: file {old}, now {new}); "
                "use another --out, or --force to start anew"
            )

        attrs = self.attrs
        self._check_kind(spec)
        if attrs.get("split") != spec.split:
            raise differ("split", attrs.get("split"), spec.split)
        if self.value_keys != stored_keys(SPLITS[spec.split], spec.quantities):
            raise differ("values", ",".join(self.value_keys), ",".join(spec.quantities or ()))
        for key, value in spec.settings.items():
            if not _same_attr(attrs.get(key), _plain(_attr_value(value))):
                raise differ(key, attrs.get(key), _attr_value(value))
        for axis, old, new in (("x", self.x, spec.x), ("y", self.y, spec.y)):
            if (old is None) != (new is None) or (
                old is not None and not np.array_equal(old, new, equal_nan=True)
            ):
                raise differ(f"{axis} grid", *_axis_difference(old, new))
        for axis, (stored, given) in enumerate(
            zip(self.directions(), spec.directions, strict=True)
        ):
            if set(stored) != set(given):
                raise differ(f"{AXES[axis]} direction names", len(stored), len(given))
            for name, tensor in given.items():
                old = stored[name].to(torch.float64)
                new = tensor.detach().cpu().to(torch.float64)
                if old.shape != new.shape or not torch.allclose(
                    old, new, rtol=1e-5, atol=1e-8, equal_nan=True
                ):  # NaN weights give NaN directions, read back as NaN
                    raise differ(f"{AXES[axis]} direction {name!r}", "stored", "different")

    def _check_kind(self, spec: SurfaceSpec) -> None:
        """Refuse an eigenvalue map resumed as a surface, and the other way round."""
        made_by = made_by_command(spec.quantities)
        if self.made_by != made_by:
            raise LandscapeInputError(
                f"{self.path} was made by `{self.made_by}`, not `{made_by}`; continue it with "
                f"`{self.made_by} --resume`, or choose another --out"
            )

    def _rows(self, indices: np.ndarray) -> slice:
        """The smallest slice of whole rows (2D) or entries (1D) that holds ``indices``."""
        width = self.shape[-1] if len(self.shape) == 2 else 1
        return slice(int(indices.min()) // width, int(indices.max()) // width + 1)

    def _validate(self) -> None:
        attrs = self.file.attrs
        if "flatscape_schema" not in attrs:
            raise LandscapeInputError(
                f"{self.path}: not a flatscape surface file (no flatscape_schema attribute); "
                "make one with `flatscape surface`"
            )
        if int(attrs["flatscape_schema"]) > SCHEMA:
            raise LandscapeInputError(
                f"{self.path}: surface schema {int(attrs['flatscape_schema'])} is newer "
                f"than this flatscape reads ({SCHEMA}); upgrade flatscape"
            )
        if str(attrs.get("split")) not in SPLITS:
            raise LandscapeInputError(f"{self.path}: damaged surface file (split attribute)")
        x = self._axis("xcoordinates")
        shape = (x,) if "ycoordinates" not in self.file else (self._axis("ycoordinates"), x)
        for key in self.value_keys:
            self._dataset(key, shape, "f", "float values")
        self._dataset("done", shape, "b", "bool flags")
        for axis in AXES[: len(shape)]:
            group = self.file.get(f"directions/{axis}")
            if not isinstance(group, h5py.Group):
                raise LandscapeInputError(
                    f"{self.path}: damaged surface file (no {axis} direction)"
                )
            for name in group:
                self._dataset(f"directions/{axis}/{name}", None, "f", "float weights")

    def _axis(self, key: str) -> int:
        """The length of a coordinate array, refused unless finite, increasing floats."""
        points = self._dataset(key, None, "f", "increasing float coordinates")
        values = points[...]
        if values.ndim != 1 or values.size == 0:
            raise self._bad(key, f"shape {values.shape}", "a non-empty list of coordinates")
        if not (np.all(np.isfinite(values)) and np.all(np.diff(values) > 0)):
            raise self._bad(key, "NaN, inf or unordered values", "finite, increasing coordinates")
        return values.size

    def _dataset(
        self, key: str, shape: tuple[int, ...] | None, kind: str, expected: str
    ) -> h5py.Dataset:
        """The array at ``key``, refused unless its dtype kind (and ``shape``) match."""
        item = self.file.get(key)
        if item is None:
            raise self._bad(key, "missing", expected)
        if not isinstance(item, h5py.Dataset):
            raise self._bad(key, "a group", expected)
        dtype = item.dtype
        if dtype.kind != kind or dtype.fields is not None or dtype.subdtype is not None:
            found = "string" if h5py.check_string_dtype(dtype) else f"{dtype}"
            raise self._bad(key, f"{found} values", expected)
        if shape is not None and item.shape != shape:
            raise self._bad(key, f"shape {item.shape}", f"{expected} of the grid's shape {shape}")
        return item

    def _bad(self, key: str, found: str, expected: str) -> LandscapeInputError:
        return LandscapeInputError(
            f"{self.path}: damaged surface file ({key}: {found}, expected {expected}); "
            "recompute it with --force"
        )


def _create(path: Path, spec: SurfaceSpec) -> None:
    """Write the complete empty file under a temporary name, then rename it into place."""
    if len(spec.directions) != len(spec.shape):
        raise LandscapeInputError(
            f"a {len(spec.shape)}D grid needs {len(spec.shape)} directions, "
            f"got {len(spec.directions)}"
        )
    # Built in memory, then written as plain bytes: HDF5 writing to a full disk fails in
    # its destructor (h5py then crashes the process); a plain write raises ENOSPC cleanly.
    image = io.BytesIO()
    with h5py.File(image, "w", libver="earliest") as f:
        f.attrs["flatscape_schema"] = SCHEMA
        f.attrs["axis_order"] = "y,x"
        f.attrs["split"] = spec.split
        for key, value in {**spec.info, **spec.settings}.items():
            f.attrs[key] = _attr_value(value)
        f.create_dataset("xcoordinates", data=np.asarray(spec.x, dtype=np.float64))
        if spec.y is not None:
            f.create_dataset("ycoordinates", data=np.asarray(spec.y, dtype=np.float64))
        if spec.quantities:
            f.attrs["quantities"] = ",".join(spec.quantities)
        nan = np.full(spec.shape, np.nan)
        for key in stored_keys(SPLITS[spec.split], spec.quantities):
            f.create_dataset(key, data=nan)
        f.create_dataset("done", data=np.zeros(spec.shape, dtype=bool))
        for axis, direction in zip(AXES, spec.directions, strict=False):
            group = f.create_group(f"directions/{axis}")
            for name, tensor in direction.items():
                group.create_dataset(name, data=_numpy(tensor))
        for name, array in spec.extra.items():
            array = np.asarray(array)
            if array.dtype.kind in "US":
                f.create_dataset(name, data=array.astype(object), dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=array)
    write_bytes_atomically(path, image.getvalue())


def stored_keys(splits: Sequence[str], quantities: Sequence[str] | None = None) -> list[str]:
    """The value arrays of a file: its ``quantities``, else loss and accuracy per split."""
    if quantities:
        return list(quantities)
    return [f"{s}_{q}" for s in splits for q in ("loss", "acc")]


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        # HDF5's own lock would stop `flatscape plot` from reading a file during a run;
        # writers are serialized by the .lock file instead.
        return h5py.File(path, mode, locking=False)
    except OSError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LandscapeInputError(
            f"{path}: not a readable HDF5 surface file ({reason}); "
            "give a file made by `flatscape surface`"
        ) from None


@contextmanager
def _closed_on_error(file: h5py.File) -> Iterator[None]:
    try:
        yield
    except BaseException:
        file.close()
        raise


@contextmanager
def _damaged(path: Path) -> Iterator[None]:
    """Turn low-level read errors of a truncated or edited file into one clear line."""
    try:
        yield
    except (OSError, KeyError, ValueError, TypeError) as err:
        if isinstance(err, LandscapeInputError):
            raise
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LandscapeInputError(
            f"{path}: damaged surface file ({reason}); recompute it with --force"
        ) from None


def _acquire_lock(path: Path) -> int:
    """Exclusive, non-blocking lock on ``<path>.lock``; released when the process dies."""
    lock_path = path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LandscapeInputError(
                f"{path} is being written by another process (lock {lock_path}); "
                "wait for it to finish or choose another --out"
            ) from None
        # The holder before us may have unlinked the lock file after we opened it.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release_lock(path: Path, fd: int) -> None:
    with suppress(FileNotFoundError):
        path.with_name(path.name + ".lock").unlink()
    os.close(fd)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


def _attr_value(value: Any) -> Any:
    """An HDF5-storable attribute: None as "none", str subclasses as plain str."""
    if value is None:
        return "none"
    return str(value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python scalars."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _axis_text(axis: np.ndarray | None) -> str:
    if axis is None:
        return "none"
    return f"{axis[0]:g}:{axis[-1]:g}:{len(axis)}"


def _axis_difference(old: np.ndarray | None, new: np.ndarray | None) -> tuple[str, str]:
    """Two axes as MIN:MAX:N, or where they first differ when those texts are equal."""
    texts = _axis_text(old), _axis_text(new)
    if texts[0] != texts[1] or old is None or new is None:
        return texts
    index = int(np.flatnonzero(~((old == new) | (np.isnan(old) & np.isnan(new))))[0])
    return (f"{texts[0]} with point {index} at {float(old[index])!r}",
            f"{texts[1]} with it at {float(new[index])!r}")  # fmt: skip


def _same_attr(stored: Any, given: Any) -> bool:
    """Attribute equality in which NaN equals NaN (a NaN setting survives the round trip)."""
    if isinstance(stored, float) and isinstance(given, float):
        return stored == given or (math.isnan(stored) and math.isnan(given))
    try:
        return bool(stored == given)
    except ValueError:  # arrays
        return bool(np.array_equal(stored, given))


def made_by_command(quantities: Sequence[str] | str | None) -> str:
    """``flatscape eigenmap`` for files of named quantities, else ``flatscape surface``."""
    return "flatscape eigenmap" if quantities else "flatscape surface"
