"""Export of surface files: VTP parsed back, CSV and NPZ read back, against the stored values."""

import csv
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
import torch

from landscape.errors import LandscapeInputError
from landscape.surface.evaluate import PointValues, grid_points
from landscape.surface.export import LOG_SHIFT, export_surface
from landscape.surface.store import SurfaceSpec, SurfaceStore


def _surface(path, nx=5, ny=4, split="both", holes=(), done=None):
    """A synthetic surface file: a tilted bowl, distinct at every point and in every array.

    ``holes`` are flat indices whose values diverged (NaN and inf, alternately); only the
    points in ``done`` (default: all) are written.
    """
    x = np.linspace(-1, 1, nx)
    y = None if ny is None else np.linspace(-0.5, 1.0, ny)
    spec = SurfaceSpec(x, y, [{"w": torch.ones(2)}] * (1 if y is None else 2), split)
    coords = grid_points(x, y)
    loss = 0.1 + (coords**2).sum(1) + 0.01 * np.arange(len(coords)) / 3
    for n, k in enumerate(holes):
        loss[k] = np.nan if n % 2 == 0 else np.inf
    indices = np.arange(len(coords)) if done is None else np.asarray(done)
    values = {
        "train": PointValues(loss[indices], 100 - 10 * loss[indices]),
        "test": PointValues(2 * loss[indices], 90 - 10 * loss[indices]),
    }
    with SurfaceStore.open_for_writing(path, spec) as store:
        store.write(indices, {s: values[s] for s in store.splits})
    return path


def _stored(path):
    with SurfaceStore.read(path) as store:
        return store.x, store.y, store.done, store.arrays


def _vtp(path):
    """Piece attributes, point data, points and cells of a .vtp, parsed back."""
    root = ET.parse(path).getroot()
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    (piece,) = root.findall("PolyData/Piece")

    def array(element, dtype):
        return np.array((element.text or "").split(), dtype=dtype)

    (data,) = piece.findall("PointData/DataArray")
    (points,) = piece.findall("Points/DataArray")
    assert points.get("NumberOfComponents") == "3"
    cells = {}
    for kind in ("Lines", "Polys"):
        for element in piece.findall(kind):
            found = {a.get("Name"): array(a, np.int64) for a in element.findall("DataArray")}
            cells[kind] = found["connectivity"], found["offsets"]
    return {
        "counts": {k: int(v) for k, v in piece.attrib.items()},
        "name": data.get("Name"),
        "scalars": piece.find("PointData").get("Scalars"),
        "values": array(data, np.float64),
        "points": array(points, np.float64).reshape(-1, 3),
        "cells": cells,
    }


def _cells_by_loops(finite):
    """The expected cells, by plain loops: corner flat indices of every all-finite cell."""
    if finite.ndim == 1:
        return [(i, i + 1) for i in range(len(finite) - 1) if finite[i] and finite[i + 1]]
    ny, nx = finite.shape
    return [
        (j * nx + i, j * nx + i + 1, (j + 1) * nx + i + 1, (j + 1) * nx + i)
        for j in range(ny - 1)
        for i in range(nx - 1)
        if finite[j, i] and finite[j, i + 1] and finite[j + 1, i] and finite[j + 1, i + 1]
    ]


def _cells_as_grid_indices(vtp, kind, kept):
    """The file's cells, each as the grid's flat indices of its corners (in file order)."""
    connectivity, offsets = vtp["cells"][kind]
    starts = np.concatenate([[0], offsets[:-1]])
    return [tuple(kept[connectivity[a:b]].tolist()) for a, b in zip(starts, offsets, strict=True)]


def test_vtp_of_a_full_grid_holds_every_point_value_and_cell(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4)
    (written,) = export_surface(surface, vtp=tmp_path / "s.vtp")
    x, y, _, arrays = _stored(surface)
    vtp = _vtp(tmp_path / "s.vtp")
    coords = grid_points(x, y)
    assert (written.points, written.cells) == (20, 12)
    assert vtp["counts"] == {
        "NumberOfPoints": 20,
        "NumberOfVerts": 0,
        "NumberOfLines": 0,
        "NumberOfStrips": 0,
        "NumberOfPolys": (5 - 1) * (4 - 1),
    }
    np.testing.assert_array_equal(vtp["points"][:, :2], coords)  # exact: repr round-trips
    np.testing.assert_array_equal(vtp["points"][:, 2], arrays["train_loss"].reshape(-1))
    assert vtp["name"] == vtp["scalars"] == "train_loss"
    np.testing.assert_array_equal(vtp["values"], arrays["train_loss"].reshape(-1))
    assert "Lines" not in vtp["cells"]
    np.testing.assert_array_equal(vtp["cells"]["Polys"][1], 4 * np.arange(1, 13))
    cells = _cells_as_grid_indices(vtp, "Polys", np.arange(20))
    assert cells == _cells_by_loops(np.ones((4, 5), dtype=bool))
    # Each quadrilateral runs counter-clockwise around one grid cell.
    for cell in cells:
        (x0, y0), (x1, _), (_, y1) = coords[cell[0]], coords[cell[1]], coords[cell[2]]
        assert x1 > x0 and y1 > y0
        np.testing.assert_array_equal(coords[list(cell)], [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def test_vtp_key_log_and_zmax_shape_the_height_not_the_point_data(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4)
    test_loss = _stored(surface)[3]["test_loss"].reshape(-1)
    zmax = float(np.median(test_loss))
    clipped = np.minimum(test_loss, zmax)
    cases = [
        ({"key": "test_loss"}, test_loss),
        ({"key": "test_loss", "log": True}, np.log(test_loss + 0.1)),
        ({"key": "test_loss", "zmax": zmax}, clipped),
        ({"key": "test_loss", "log": True, "zmax": zmax}, np.log(clipped + 0.1)),
    ]
    assert LOG_SHIFT == 0.1  # loss-landscape's h52vtp.py: np.log(z_array + 0.1)
    for n, (options, height) in enumerate(cases):
        out = tmp_path / f"{n}.vtp"
        export_surface(surface, vtp=out, **options)
        vtp = _vtp(out)
        np.testing.assert_allclose(vtp["points"][:, 2], height, rtol=1e-15)
        assert vtp["name"] == "test_loss"
        np.testing.assert_array_equal(vtp["values"], test_loss)  # the stored values
        assert vtp["counts"]["NumberOfPolys"] == 12
    assert (clipped == zmax).sum() == 10  # half the points are clipped


def test_vtp_leaves_out_diverged_points_and_every_cell_that_touches_them(tmp_path):
    holes = (6, 13, 19)  # NaN, inf, NaN: interior, interior, a corner
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4, holes=holes)
    (written,) = export_surface(surface, vtp=tmp_path / "s.vtp")
    x, y, done, arrays = _stored(surface)
    assert done.all()
    finite = np.isfinite(arrays["train_loss"])
    assert finite.sum() == 17
    kept = np.flatnonzero(finite)
    vtp = _vtp(tmp_path / "s.vtp")
    assert vtp["counts"]["NumberOfPoints"] == written.points == 17
    np.testing.assert_array_equal(vtp["points"][:, :2], grid_points(x, y)[kept])
    np.testing.assert_array_equal(vtp["values"], arrays["train_loss"].reshape(-1)[kept])
    expected = _cells_by_loops(finite)
    assert len(expected) == 12 - 4 - 4 - 1 + 1  # the corner's one cell is also one of 13's
    assert _cells_as_grid_indices(vtp, "Polys", kept) == expected
    assert written.cells == len(expected)
    assert "nan" not in (tmp_path / "s.vtp").read_text().lower()


def test_1d_vtp_is_line_segments_in_the_xz_plane(tmp_path):
    full = _surface(tmp_path / "c.h5", nx=6, ny=None)
    (written,) = export_surface(full, vtp=tmp_path / "c.vtp")
    x, _, _, arrays = _stored(full)
    vtp = _vtp(tmp_path / "c.vtp")
    assert (written.points, written.cells) == (6, 5)
    assert vtp["counts"]["NumberOfLines"] == 5 and vtp["counts"]["NumberOfPolys"] == 0
    assert "Polys" not in vtp["cells"]
    np.testing.assert_array_equal(vtp["points"], np.stack([x, 0 * x, arrays["train_loss"]], 1))
    assert _cells_as_grid_indices(vtp, "Lines", np.arange(6)) == [(i, i + 1) for i in range(5)]

    gapped = _surface(tmp_path / "g.h5", nx=6, ny=None, holes=(2,))
    export_surface(gapped, vtp=tmp_path / "g.vtp")
    vtp = _vtp(tmp_path / "g.vtp")
    kept = np.array([0, 1, 3, 4, 5])
    np.testing.assert_array_equal(vtp["points"][:, 0], x[kept])
    assert _cells_as_grid_indices(vtp, "Lines", kept) == [(0, 1), (3, 4), (4, 5)]


@pytest.mark.parametrize("ny", [4, None], ids=["2d", "1d"])
def test_csv_has_one_row_per_point_with_every_value_at_full_precision(tmp_path, ny):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=ny, holes=(1, 3))
    (written,) = export_surface(surface, csv=tmp_path / "s.csv")
    x, y, _, arrays = _stored(surface)
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.reader(f))
    keys = ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert rows[0] == ["x", *(["y"] if ny else []), *keys, "done"]
    body = rows[1:]
    assert len(body) == written.points == x.size * (1 if y is None else y.size)
    coords = grid_points(x, y)
    table = np.array([[float(v) for v in row] for row in body])
    np.testing.assert_array_equal(table[:, : coords.shape[1]], coords)
    for n, key in enumerate(keys):
        column = table[:, coords.shape[1] + n]
        stored = arrays[key].reshape(-1)
        np.testing.assert_array_equal(column, np.where(np.isfinite(stored), stored, np.nan))
    assert [row[-1] for row in body] == ["1"] * len(body)
    # Diverged points (NaN and inf in the file) are both written as nan.
    assert np.isinf(arrays["train_loss"].reshape(-1)[3])
    assert body[1][coords.shape[1]] == body[3][coords.shape[1]] == "nan"


def test_npz_holds_the_grid_every_value_array_and_done(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4, split="train", holes=(7,))
    (written,) = export_surface(surface, npz=tmp_path / "s.npz")
    x, y, done, arrays = _stored(surface)
    assert written.points == 20 and written.cells is None
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["done", "train_acc", "train_loss", "xcoordinates",
                                     "ycoordinates"]  # fmt: skip
        np.testing.assert_array_equal(npz["xcoordinates"], x)
        np.testing.assert_array_equal(npz["ycoordinates"], y)
        np.testing.assert_array_equal(npz["done"], done)
        assert npz["done"].dtype == bool and npz["train_loss"].shape == (4, 5)
        for key in ("train_loss", "train_acc"):
            np.testing.assert_array_equal(npz[key], arrays[key])
    with np.load(_npz_1d(tmp_path)) as npz:
        assert "ycoordinates" not in npz.files and npz["train_loss"].shape == (6,)


def _npz_1d(tmp_path):
    surface = _surface(tmp_path / "c.h5", nx=6, ny=None)
    return export_surface(surface, npz=tmp_path / "c.npz")[0].path


def test_every_value_array_of_the_file_is_exported(tmp_path, monkeypatch):
    """Future files may hold other values (say lambda_max): whatever the store reads."""
    surface = _surface(tmp_path / "s.h5", nx=3, ny=2, split="train")
    sharp = np.arange(6.0).reshape(2, 3) / 7
    with h5py.File(surface, "r+") as f:
        f["lambda_max"] = sharp
    monkeypatch.setattr(
        SurfaceStore, "value_keys", property(lambda self: ["train_loss", "lambda_max"])
    )
    export_surface(
        surface, key="lambda_max", vtp=tmp_path / "s.vtp", csv=tmp_path / "s.csv",
        npz=tmp_path / "s.npz",
    )  # fmt: skip
    np.testing.assert_array_equal(_vtp(tmp_path / "s.vtp")["values"], sharp.reshape(-1))
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["x", "y", "train_loss", "lambda_max", "done"]
    assert [float(r["lambda_max"]) for r in rows] == sharp.reshape(-1).tolist()
    with np.load(tmp_path / "s.npz") as npz:
        np.testing.assert_array_equal(npz["lambda_max"], sharp)


def test_a_half_finished_surface_is_refused_unless_partial(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4, done=np.arange(7))
    outputs = {"vtp": tmp_path / "s.vtp", "csv": tmp_path / "s.csv", "npz": tmp_path / "s.npz"}
    with pytest.raises(LandscapeInputError, match=r"7 of 20 points are done.*--partial"):
        export_surface(surface, **outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]

    vtp, csv_file, npz = export_surface(surface, **outputs, partial=True)
    x, y, done, arrays = _stored(surface)
    assert done.sum() == 7 and (vtp.points, csv_file.points, npz.points) == (7, 20, 20)
    parsed = _vtp(outputs["vtp"])
    kept = np.arange(7)
    np.testing.assert_array_equal(parsed["points"][:, :2], grid_points(x, y)[kept])
    np.testing.assert_array_equal(parsed["values"], arrays["train_loss"].reshape(-1)[kept])
    expected = _cells_by_loops(done)
    assert len(expected) == 1  # only the cell on points 0, 1, 5, 6 is complete
    assert _cells_as_grid_indices(parsed, "Polys", kept) == expected == [(0, 1, 6, 5)]
    with open(outputs["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["done"] for r in rows] == ["1"] * 7 + ["0"] * 13
    assert all(r[k] == "nan" for r in rows[7:] for k in ("train_loss", "test_acc"))
    assert float(rows[6]["test_loss"]) == arrays["test_loss"].reshape(-1)[6]
    with np.load(outputs["npz"]) as arrays_back:
        np.testing.assert_array_equal(arrays_back["done"], done)
        assert np.isnan(arrays_back["train_loss"].reshape(-1)[7:]).all()
        np.testing.assert_array_equal(arrays_back["train_loss"].reshape(-1)[:7],
                                      arrays["train_loss"].reshape(-1)[:7])  # fmt: skip


def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=3, ny=2, split="test")
    out = tmp_path / "o.vtp"
    cases = [
        ({}, "name at least one output: --vtp, --csv or --npz"),
        ({"vtp": out}, "--key 'train_loss': .* choose one of test_loss, test_acc"),
        ({"vtp": out, "key": "lambda_max"}, "--key 'lambda_max'"),
        ({"vtp": out, "key": "test_loss", "zmax": float("inf")}, "--zmax inf: give a finite"),
        ({"vtp": out, "key": "test_loss", "zmax": float("nan")}, "--zmax nan"),
        ({"csv": tmp_path / "o.csv", "log": True}, "--log shapes the VTP surface only"),
        ({"csv": tmp_path / "o.csv", "key": "test_loss"}, "--key shapes the VTP"),
        ({"csv": tmp_path / "o.csv", "zmax": 3.0}, "--zmax shapes the VTP"),
        ({"csv": out, "npz": out}, "their own file"),
        ({"csv": surface}, "their own file"),
    ]
    for options, message in cases:
        with pytest.raises(LandscapeInputError, match=message):
            export_surface(surface, **options)
    with pytest.raises(LandscapeInputError, match="no such surface file"):
        export_surface(tmp_path / "missing.h5", csv=tmp_path / "o.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
    (written,) = export_surface(surface, vtp=out, key="test_acc")  # a test-only file is fine
    assert written.cells == 2


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    surface = _surface(tmp_path / "s.h5", nx=3, ny=2)
    out = tmp_path / "s.npz"
    out.write_bytes(b"previous")

    def broken(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        export_surface(surface, npz=out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.npz"]
