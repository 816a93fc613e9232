"""Surface files, grids and checkpoints that lie: one line, exit 2, nothing changed or left.

Each case class of issue 22 that reaches `surface`, `eigenmap`, `plot` or `export`: absurd
grids (refused before the checkpoint loads), stored arrays of another dtype or shape,
plot and VTP requests that cannot be drawn, eigenvalue maps taken for surfaces, and
checkpoints with NaN weights (recorded as gaps).
"""

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import distill.sources as analysis_module
from cli.main import cli
from distill.checkpoint import save_checkpoint
from distill.data import load_dataset
from distill.trainer import Recipe, train_teacher
from landscape.surface.store import SurfaceSpec, SurfaceStore
from tests.cli.helpers import assert_one_line_error

TINY = ["--x", "-1:1:3", "--samples", "64", "--batch-size", "64", "--threads", "1", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A one-epoch MLP and the same with NaN weights in its first layer."""
    folder = tmp_path_factory.mktemp("lying")
    model, meta = train_teacher(
        load_dataset("mnist1d"), arch="mlp", recipe=Recipe(epochs=1), seed=0
    )
    save_checkpoint(folder / "mlp.safetensors", model, meta)
    with torch.no_grad():
        next(model.parameters())[0, :3] = float("nan")
    save_checkpoint(folder / "nan.safetensors", model, meta)
    return folder / "mlp.safetensors", folder / "nan.safetensors"


def _listing(folder):
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.mark.parametrize(
    "command, grid, needle",
    [
        ("surface", ["--x=-1:1:2000000000"], "refused even with --force"),
        ("surface", ["--x=-1:1:1e20"], "'1e20' is not a whole number"),
        ("surface", ["--x=-1:1:3", "--y=nan:1:3"], "--y 'nan:1:3'"),
        ("surface", ["--x=-1:1:2.5"], "'2.5' is not a whole number"),
        ("surface", ["--x=-1:1:2000", "--y=-1:1:1000"], "2,000,000 points"),
        ("eigenmap", ["--x=-1:1:2000000000", "--y=none"], "refused even with --force"),
        ("eigenmap", ["--x=-1:1:30", "--y=-1:1:30"], "more than 441"),
    ],
)
def test_absurd_grids_are_refused_before_the_checkpoint_loads(
    tmp_path, monkeypatch, command, grid, needle
):
    monkeypatch.setattr(analysis_module, "open_checkpoint", lambda *a, **k: pytest.fail("loaded"))
    result = run(command, tmp_path / "missing.safetensors", *grid, "--out", tmp_path / "g.h5")
    assert_one_line_error(result, needle)
    assert list(tmp_path.iterdir()) == []


BAD_VALUES = {
    "int8": np.full((3,), 4, dtype=np.int8),
    "bytes": np.array([b"4.7"] * 3),
    "complex": np.full((3,), 4.7 + 0j),
    "wrong shape": np.zeros((2, 3)),
}


@pytest.mark.parametrize("kind", [*BAD_VALUES, "strings", "group", "done int8"])
def test_stored_arrays_of_another_dtype_or_shape_are_refused_by_every_reader(
    tmp_path, checkpoints, kind
):
    out = tmp_path / "s.h5"
    assert run("surface", checkpoints[0], *TINY, "--out", out).exit_code == 0
    with h5py.File(out, "r+") as f:
        key = "done" if kind == "done int8" else "train_loss"
        del f[key]
        if kind == "strings":
            f.create_dataset(
                key, data=np.array(["4.7"] * 3, dtype=object), dtype=h5py.string_dtype()
            )
        elif kind == "group":
            f.create_group(key)
        elif kind == "done int8":
            f[key] = np.ones(3, dtype=np.int8)
        else:
            f[key] = BAD_VALUES[kind]
    before, listing = out.read_bytes(), _listing(tmp_path)
    for args in (
        ["surface", checkpoints[0], *TINY, "--out", out, "--resume"],
        ["plot", out, "--kind", "line", "--out", tmp_path / "p.png"],
        ["export", out, "--csv", tmp_path / "s.csv"],
    ):
        result = run(*args)
        assert_one_line_error(result, f"{out}: damaged surface file ({key}: ")
        assert "Warning" not in result.output  # no ComplexWarning
    assert out.read_bytes() == before and _listing(tmp_path) == listing


def test_nan_weights_give_a_surface_of_gaps_that_resumes_and_forces(tmp_path, checkpoints):
    out = tmp_path / "n.h5"
    for extra in ([], ["--resume"], ["--force"]):
        result = run("surface", checkpoints[1], *TINY, "--out", out, *extra)
        assert result.exit_code == 0, result.output
    with SurfaceStore.read(out) as store:
        assert store.done.all() and np.isnan(store.arrays["train_loss"]).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.h5"]


def _eigen_file(path, done=3):
    spec = SurfaceSpec(np.linspace(-1, 1, 3), None, [{"w": torch.ones(2)}], "train",
                       quantities=("lambda_max", "lambda_min", "train_loss"))  # fmt: skip
    with SurfaceStore.open_for_writing(path, spec) as store:
        values = {key: -np.arange(1.0, done + 1) for key in store.value_keys}
        store.write_arrays(np.arange(done), values)
    return path


def test_an_eigenvalue_map_names_the_command_that_made_it(tmp_path, checkpoints):
    finished, unfinished = _eigen_file(tmp_path / "e.h5"), _eigen_file(tmp_path / "u.h5", 2)
    before = finished.read_bytes()
    result = run("surface", checkpoints[0], *TINY, "--out", finished, "--resume")
    assert_one_line_error(result, "made by `flatscape eigenmap`, not `flatscape surface`")
    assert "--resume`" in result.stderr and finished.read_bytes() == before
    result = run("export", unfinished, "--csv", tmp_path / "u.csv")
    assert_one_line_error(result, "continue it with `flatscape eigenmap --resume`")
    result = run("plot", finished, "--kind", "line", "--out", tmp_path / "p.png")
    assert result.exit_code == 0, result.output


def test_plots_and_exports_that_cannot_be_drawn_write_nothing(tmp_path):
    eigen = _eigen_file(tmp_path / "e.h5")
    two_d = tmp_path / "s.h5"
    spec = SurfaceSpec(np.linspace(-1, 1, 3), np.linspace(-1, 1, 2),
                       [{"w": torch.ones(2)}] * 2, "train")  # fmt: skip
    with SurfaceStore.open_for_writing(two_d, spec) as store:
        store.write_arrays(
            np.arange(6), {"train_loss": np.full(6, np.nan), "train_acc": np.ones(6)}
        )
    listing = _listing(tmp_path)
    png, vtp, csv = tmp_path / "p.png", tmp_path / "s.vtp", tmp_path / "s.csv"
    cases = [
        (
            ["plot", two_d, "--levels", "1,1,1", "--key", "train_acc", "--out", png],
            "--levels 1,1,1",
        ),
        (["plot", two_d, "--levels", "1,inf", "--key", "train_acc", "--out", png], "distinct fin"),
        (["plot", two_d, "--vmin", "nan", "--key", "train_acc", "--out", png], "--vmin nan"),
        (["plot", eigen, "--levels", "5", "--out", png], "a line plot has none"),  # 1D
        (["export", two_d, "--vtp", vtp, "--csv", csv], "no two neighbouring points"),
        (
            [
                "export",
                two_d,
                "--vtp",
                vtp,
                "--key",
                "train_acc",
                "--zmax",
                "-1",
                "--log",
                "--csv",
                csv,
            ],
            "drop --log or raise --zmax",
        ),  # fmt: skip
        (
            ["export", eigen, "--vtp", vtp, "--key", "lambda_min", "--log", "--csv", csv],
            "--log: ln(value + 0.1) needs values above -0.1",
        ),  # fmt: skip
    ]
    for args, needle in cases:
        assert_one_line_error(run(*args), needle)
    assert _listing(tmp_path) == listing


def test_log_of_a_key_without_positive_values_says_so(tmp_path):
    path = tmp_path / "e.h5"
    spec = SurfaceSpec(np.linspace(-1, 1, 3), np.linspace(-1, 1, 2),
                       [{"w": torch.ones(2)}] * 2, "train",
                       quantities=("lambda_max", "lambda_min", "train_loss"))  # fmt: skip
    with SurfaceStore.open_for_writing(path, spec) as store:
        store.write_arrays(np.arange(6), {"lambda_max": np.ones(6), "lambda_min": -np.ones(6),
                                          "train_loss": np.ones(6)})  # fmt: skip
    result = run("plot", path, "--key", "lambda_min", "--log", "--out", tmp_path / "p.png")
    assert_one_line_error(result, "--log needs positive values, and lambda_min of e has none")
    assert not (tmp_path / "p.png").exists()
