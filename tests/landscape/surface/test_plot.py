import h5py
import numpy as np
import pytest
import torch
from matplotlib import colors
from matplotlib.collections import QuadMesh

from landscape.errors import LandscapeInputError
from landscape.surface.evaluate import PointValues, grid_points
from landscape.surface.plot import KINDS, grid_figure, line_figure, load_surface, plot_surfaces
from landscape.surface.store import SurfaceSpec, SurfaceStore

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


def _bowl(path, nx=9, ny=7, holes=True, split="both", done_fraction=1.0, shift=0.0):
    """A synthetic surface file: a paraboloid with NaN and inf where diverged."""
    x, y = np.linspace(-1, 1, nx), (None if ny is None else np.linspace(-0.5, 1.5, ny))
    directions = [{"w": torch.ones(2)} for _ in range(1 if y is None else 2)]
    spec = SurfaceSpec(x, y, directions, split, settings={"direction": "random"})
    coords = grid_points(x, y)
    loss = 0.1 + shift + (coords**2).sum(1)
    if holes:
        loss[1] = np.nan
        loss[-1] = np.inf
    acc = 100 - 10 * loss
    done = int(done_fraction * len(loss))
    with SurfaceStore.open_for_writing(path, spec) as store:
        values = PointValues(loss[:done], acc[:done])
        store.write(np.arange(done), {s: values for s in store.splits})
    return path


RENDERS = [(kind, ".png") for kind in KINDS] + [
    (kind, suffix) for kind in ("line", "surface3d") for suffix in (".pdf", ".svg")
]


@pytest.mark.parametrize("kind, suffix", RENDERS)
def test_every_kind_renders_with_nan_and_inf_points(tmp_path, kind, suffix):
    ny = None if kind == "line" else 7
    surface = _bowl(tmp_path / "s.h5", ny=ny)
    out = plot_surfaces([surface], tmp_path / f"fig{suffix}", kind=kind)
    assert out.read_bytes().startswith(MAGIC[suffix])


@pytest.mark.parametrize("kind", ["contour", "filled", "heatmap", "surface3d"])
def test_two_dimensional_kinds_take_options_and_several_files(tmp_path, kind):
    a = _bowl(tmp_path / "a.h5", nx=11, ny=5)
    b = _bowl(tmp_path / "b.h5", nx=11, ny=5, shift=0.5, done_fraction=0.6)
    options = {"key": "test_loss", "vmin": 0.2, "vmax": 2.0, "levels": 8, "log": True}
    out = plot_surfaces([a, b], tmp_path / "fig.png", kind=kind, labels=["t", "s"], **options)
    assert out.read_bytes().startswith(MAGIC[".png"])
    surfaces = [load_surface(a, "teacher"), load_surface(b, "student")]
    fig = grid_figure(surfaces, kind, **options)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["teacher", "student"]
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    if kind == "surface3d":  # facets are coloured by hand; the colour bar carries the norm
        norms = [m.norm for m in bar.collections if isinstance(m, QuadMesh)]
        assert all(ax.get_zlim() == (0.2, 2.0) for ax in panels)
    else:
        norms = [m.norm for ax in panels for m in (*ax.collections, *ax.images)]
    assert len(norms) >= 1
    assert all(isinstance(n, colors.LogNorm) for n in norms)  # log took effect
    assert all((n.vmin, n.vmax) == (0.2, 2.0) for n in norms)  # so did vmin/vmax
    if kind in ("contour", "filled"):
        levels = [c.levels for c in panels[0].collections if hasattr(c, "levels")]
        np.testing.assert_allclose(levels[0], np.geomspace(0.2, 2.0, 8))  # 8 log levels
    explicit = grid_figure(surfaces[:1], "contour", "train_acc", None, None, [70.0, 80, 90], False)
    (lines,) = [c for c in explicit.axes[0].collections if hasattr(c, "levels")]
    assert list(lines.levels) == [70.0, 80.0, 90.0]


def test_line_overlays_files_and_takes_options(tmp_path):
    files = [_bowl(tmp_path / f"{n}.h5", ny=None, shift=n) for n in range(3)]
    train_only = _bowl(tmp_path / "t.h5", ny=None, split="train")
    out = plot_surfaces([*files, train_only], tmp_path / "lines.pdf", kind="line", log=True, vmax=5)
    assert out.read_bytes().startswith(MAGIC[".pdf"])
    surfaces = [load_surface(p) for p in (*files, train_only)]
    loss_ax, acc_ax = line_figure(surfaces, None, 5.0, True).axes
    assert loss_ax.get_yscale() == "log" and loss_ax.get_ylim()[1] == 5.0
    # three files x (train, test) + one train-only file, each a curve in both panels
    assert len(loss_ax.get_lines()) == 7 and len(acc_ax.get_lines()) == 7
    assert [line.get_linestyle() for line in loss_ax.get_lines()[:2]] == ["-", "--"]


def test_a_flat_or_all_diverged_surface(tmp_path):
    flat = tmp_path / "flat.h5"
    x = np.linspace(-1, 1, 3)
    spec = SurfaceSpec(x, x, [{"w": torch.ones(1)}] * 2, "train")
    with SurfaceStore.open_for_writing(flat, spec) as store:
        store.write(np.arange(9), {"train": PointValues(np.ones(9), np.ones(9))})
    assert plot_surfaces([flat], tmp_path / "flat.png", kind="contour").exists()
    with SurfaceStore.open_for_writing(flat, spec, force=True) as store:
        store.write(np.arange(9), {"train": PointValues(np.full(9, np.inf), np.ones(9))})
    with pytest.raises(LandscapeInputError, match="no finite values"):
        plot_surfaces([flat], tmp_path / "nan.png", kind="heatmap")


def test_unfinished_points_are_gaps(tmp_path):
    path = _bowl(tmp_path / "s.h5", holes=False, done_fraction=0.5)
    surface = load_surface(path)
    values = surface.values["train_loss"].reshape(-1)
    assert np.isnan(values[40:]).all() and np.isfinite(values[:31]).all()


def test_bad_plot_requests_are_one_line_user_errors(tmp_path):
    two_d = _bowl(tmp_path / "s.h5")
    one_d = _bowl(tmp_path / "c.h5", ny=None, split="train")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["xcoordinates"] = np.zeros(3)
    cases = [
        ([two_d], {"kind": "line"}, "2D surface"),
        ([one_d], {"kind": "contour"}, "1D surface"),
        ([one_d], {"kind": "bar"}, "--kind"),
        ([two_d], {"kind": "heatmap", "key": "train_err"}, "no train_err"),
        ([two_d], {"kind": "contour", "labels": ["a", "b"]}, "--label"),
        ([two_d], {"kind": "contour", "levels": 1}, "--levels"),
        ([two_d], {"kind": "contour", "log": True, "vmin": 0.0}, "positive"),
        ([two_d], {"kind": "filled", "vmin": 2.0, "vmax": 1.0}, "below vmax"),
        ([foreign], {"kind": "contour"}, "not a flatscape surface"),
        ([tmp_path / "missing.h5"], {"kind": "contour"}, "no such"),
    ]
    for paths, options, message in cases:
        with pytest.raises(LandscapeInputError, match=message) as err:
            plot_surfaces(paths, tmp_path / "fig.png", **options)
        assert "\n" not in str(err.value)
    with pytest.raises(LandscapeInputError, match=".pdf, .png or .svg"):
        plot_surfaces([two_d], tmp_path / "fig.jpg")
    assert not (tmp_path / "fig.png").exists()
