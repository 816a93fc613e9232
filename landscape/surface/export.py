"""Surface files for other tools: ParaView PolyData (``.vtp``), CSV rows, ``.npz`` arrays.

The ``.vtp`` is the file loss-landscape's ``h52vtp.py`` writes: the grid points lifted to
height z (the chosen value, clipped at ``zmax``, optionally on a log scale), that value as
point data, and one quadrilateral per grid cell (one line segment per interval of a 1D
curve). Points whose value is not finite (diverged, or not computed yet) are left out
with every cell that touches them, so ParaView shows gaps, as ``flatscape plot`` does.

CSV and ``.npz`` hold every value array at full precision, with NaN wherever a point is
not done or its value is not finite, and the ``done`` mask beside them.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landscape.atomic_files import replaced_atomically
from landscape.errors import LandscapeInputError
from landscape.surface.evaluate import grid_points
from landscape.surface.store import SurfaceStore

LOG_SHIFT = 0.1
"""``log`` lifts points to ``ln(value + LOG_SHIFT)``, as ``h52vtp.py`` does: a zero loss
stays finite."""


@dataclass(frozen=True)
class GridValues:
    """A surface file's grid and value arrays, NaN where not done or not finite."""

    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    done: np.ndarray


@dataclass(frozen=True)
class ExportedFile:
    """One file written: its path, its points and (VTP only) its cells."""

    path: Path
    points: int
    cells: int | None = None


def export_surface(
    path: str | Path,
    *,
    vtp: str | Path | None = None,
    csv: str | Path | None = None,
    npz: str | Path | None = None,
    key: str | None = None,
    log: bool = False,
    zmax: float | None = None,
    partial: bool = False,
) -> list[ExportedFile]:
    """Write a surface file as any of ``.vtp``, CSV and ``.npz``.

    Every output is written under a temporary name beside it and renamed into place, so
    an error never leaves half a file; an existing file of that name is replaced.

    Args:
        path: A surface file made by ``flatscape surface``.
        vtp: ParaView PolyData file: points ``(x, y, z)`` (1D: ``(x, 0, z)``) with z the
            ``key`` value, that value as point data, quadrilaterals (1D: line segments).
            Only points with a finite z are written, and only cells whose corners all are.
        csv: One row per grid point, in the store's flat order:
            ``x,y,<value keys>,done`` (1D: no ``y``), floats at full precision.
        npz: ``xcoordinates``, ``ycoordinates`` (2D), each value array, ``done``.
        key: The value that lifts the VTP's points (default ``train_loss``).
        log: VTP height ``ln(min(value, zmax) + 0.1)``, as loss-landscape's ``log``.
        zmax: VTP heights above this are clipped to it, as loss-landscape's ``zmax``.
        partial: Export a surface whose run has not finished; its pending points are NaN.

    Returns:
        The files written, in the order vtp, csv, npz.

    Raises:
        LandscapeInputError: No output named, two outputs or the surface share a path,
            ``key`` is not in the file, ``key``/``log``/``zmax`` without ``vtp``,
            ``zmax`` not finite, or points are pending without ``partial``.
    """
    path = Path(path)
    outputs = {fmt: Path(out) for fmt, out in (("vtp", vtp), ("csv", csv), ("npz", npz)) if out}
    if not outputs:
        raise LandscapeInputError("export: name at least one output: --vtp, --csv or --npz")
    named = [path.resolve(), *(out.resolve() for out in outputs.values())]
    if len(set(named)) != len(named):
        raise LandscapeInputError("export: the surface and each output need their own file")
    if zmax is not None and not math.isfinite(zmax):
        raise LandscapeInputError(f"--zmax {zmax}: give a finite number")
    grid = read_grid_values(path, partial)
    height_key = key or "train_loss"
    if (vtp or key) and height_key not in grid.values:
        raise LandscapeInputError(
            f"--key {height_key!r}: {path} has no such values; choose one of "
            f"{', '.join(grid.values)}"
        )
    shaping = {"--key": key is not None, "--log": log, "--zmax": zmax is not None}
    if vtp is None and any(shaping.values()):
        flag = next(flag for flag, given in shaping.items() if given)
        raise LandscapeInputError(
            f"{flag} shapes the VTP surface only (CSV and NPZ hold every value as stored); "
            "pass --vtp too"
        )
    tree = vtp_tree(grid, height_key, log, zmax, path) if "vtp" in outputs else None
    written = []  # every output is checked (above) before the first is written
    if tree is not None:
        written.append(_write_tree(tree, outputs["vtp"]))
    if "csv" in outputs:
        written.append(write_csv(grid, outputs["csv"]))
    if "npz" in outputs:
        written.append(write_npz(grid, outputs["npz"]))
    return written


def read_grid_values(path: str | Path, partial: bool = False) -> GridValues:
    """Read a surface file's grid and values; refuse pending points unless ``partial``."""
    with SurfaceStore.read(path) as store:
        done = store.done.copy()
        if not partial and not done.all():
            raise LandscapeInputError(
                f"{path}: {int(done.sum()):,} of {done.size:,} points are done; wait for the "
                f"run or continue it with `{store.made_by} --resume`, or pass --partial "
                "to export the pending points as NaN"
            )
        values = {
            key: np.where(done & np.isfinite(array), array, np.nan).astype(np.float64)
            for key, array in store.arrays.items()
        }
        return GridValues(store.x, store.y, values, done)


def vtp_height(values: np.ndarray, log: bool = False, zmax: float | None = None) -> np.ndarray:
    r"""The VTP's z of each point: :math:`\ln(\min(v, z_{max}) + 0.1)` with ``log``.

    NaN where the value is not finite, or where the log is not (values at or below -0.1).
    """
    z = np.where(np.isfinite(values), values, np.nan)
    if zmax is not None:
        z = np.minimum(z, zmax)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(z + LOG_SHIFT)
    return np.where(np.isfinite(z), z, np.nan)


def vtp_document(grid: GridValues, key: str, z: np.ndarray) -> ET.ElementTree:
    """The PolyData XML of the points with a finite ``z`` and the cells between them."""
    keep = np.isfinite(z.reshape(-1))
    corners = _cell_corners(len(grid.x), None if grid.y is None else len(grid.y))
    cells = corners[keep[corners].all(axis=1)]
    renumbered = np.cumsum(keep) - 1
    coords = grid_points(grid.x, grid.y)
    y = coords[:, 1] if grid.y is not None else np.zeros(len(coords))
    points = np.stack([coords[:, 0], y, z.reshape(-1)], axis=1)[keep]

    root = ET.Element(
        "VTKFile",
        type="PolyData",
        version="1.0",
        byte_order="LittleEndian",
        header_type="UInt64",
    )
    cell_kind = "Lines" if grid.y is None else "Polys"
    counts = {"Points": len(points), "Verts": 0, "Lines": 0, "Strips": 0, "Polys": 0}
    counts[cell_kind] = len(cells)
    piece = ET.SubElement(
        ET.SubElement(root, "PolyData"),
        "Piece",
        {f"NumberOf{name}": str(n) for name, n in counts.items()},
    )
    point_data = ET.SubElement(piece, "PointData", Scalars=key)
    _data_array(point_data, grid.values[key].reshape(-1)[keep], "Float64", Name=key)
    _data_array(ET.SubElement(piece, "Points"), points, "Float64", NumberOfComponents="3")
    cell_element = ET.SubElement(piece, cell_kind)
    _data_array(cell_element, renumbered[cells], "Int64", Name="connectivity")
    offsets = corners.shape[1] * np.arange(1, len(cells) + 1)
    _data_array(cell_element, offsets, "Int64", Name="offsets")
    ET.indent(root)
    return ET.ElementTree(root)


def vtp_tree(
    grid: GridValues,
    key: str,
    log: bool = False,
    zmax: float | None = None,
    source: str | Path = "the surface",
) -> ET.ElementTree:
    """The :func:`vtp_document` of ``key`` at the heights of :func:`vtp_height`.

    Raises:
        LandscapeInputError: No cell has all its corners at a finite height (fewer than
            two neighbouring finite points): the file would show nothing.
    """
    tree = vtp_document(grid, key, vtp_height(grid.values[key], log, zmax))
    piece = tree.getroot().find("PolyData/Piece")
    if int(piece.get("NumberOfLines")) + int(piece.get("NumberOfPolys")) == 0:
        shaped = " (--log: ln(value + 0.1) needs values above -0.1)" if log else ""
        raise LandscapeInputError(
            f"--vtp: {key} of {source} has no two neighbouring points with a finite "
            f"height{shaped}, so the VTP would be empty; choose another --key"
            f"{', drop --log or raise --zmax' if log else ''} (nothing was written)"
        )
    return tree


def write_vtp(
    grid: GridValues, out: str | Path, key: str, log: bool = False, zmax: float | None = None
) -> ExportedFile:
    """Write the ``.vtp`` of :func:`vtp_tree`."""
    return _write_tree(vtp_tree(grid, key, log, zmax), Path(out))


def _write_tree(tree: ET.ElementTree, out: Path) -> ExportedFile:
    piece = tree.getroot().find("PolyData/Piece")
    cells = int(piece.get("NumberOfLines")) + int(piece.get("NumberOfPolys"))
    with replaced_atomically(out, "wb") as f:
        tree.write(f, encoding="utf-8", xml_declaration=True)
    return ExportedFile(out, int(piece.get("NumberOfPoints")), cells)


def write_csv(grid: GridValues, out: str | Path) -> ExportedFile:
    """Write one row per grid point: ``x,y,<value keys>,done``, floats as ``repr``."""
    out = Path(out)
    coords = grid_points(grid.x, grid.y)
    columns = {"x": coords[:, 0]}
    if grid.y is not None:
        columns["y"] = coords[:, 1]
    columns.update({key: array.reshape(-1) for key, array in grid.values.items()})
    rows = np.stack(list(columns.values()), axis=1).tolist()
    done = grid.done.reshape(-1).tolist()
    with replaced_atomically(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "done"])
        writer.writerows([*map(repr, row), int(d)] for row, d in zip(rows, done, strict=True))
    return ExportedFile(out, len(rows))


def write_npz(grid: GridValues, out: str | Path) -> ExportedFile:
    """Write ``xcoordinates``, ``ycoordinates`` (2D), each value array and ``done``."""
    out = Path(out)
    arrays = {"xcoordinates": grid.x}
    if grid.y is not None:
        arrays["ycoordinates"] = grid.y
    with replaced_atomically(out, "wb") as f:
        np.savez(f, **arrays, **grid.values, done=grid.done)
    return ExportedFile(out, grid.done.size)


def _cell_corners(nx: int, ny: int | None) -> np.ndarray:
    """Flat point indices of each cell: ``(nx - 1, 2)`` segments or ``((ny-1)(nx-1), 4)``.

    Quadrilaterals go counter-clockwise from ``(x_i, y_j)``, as in ``h52vtp.py``.
    """
    if ny is None:
        i = np.arange(nx - 1)
        return np.stack([i, i + 1], axis=1)
    k = (np.arange(ny - 1)[:, None] * nx + np.arange(nx - 1)).reshape(-1)
    return np.stack([k, k + 1, k + nx + 1, k + nx], axis=1)


def _data_array(parent: ET.Element, values: np.ndarray, dtype: str, **attrs: str) -> None:
    """An ASCII ``DataArray``: one row of ``values`` per line, floats as ``repr``."""
    rows = values.reshape(len(values), -1).tolist() if len(values) else []
    text = "\n".join(" ".join(map(repr, row)) for row in rows)
    element = ET.SubElement(parent, "DataArray", type=dtype, format="ascii", **attrs)
    element.text = f"\n{text}\n" if rows else ""
