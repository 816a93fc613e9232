"""`flatscape surface` and `flatscape plot`: values against `evaluate`, resume, one-line errors."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import distill.sources as analysis_module
import landscape.surface.loss_surface as loss_surface_module
from cli.main import cli
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.data import load_dataset
from distill.trainer import Recipe, evaluate, train_teacher
from landscape.surface.store import SurfaceSpec, SurfaceStore
from tests.cli.helpers import assert_one_line_error

SMALL = [
    "--x",
    "-1:1:3",
    "--y",
    "-0.5:0.5:2",
    "--samples",
    "300",
    "--batch-size",
    "100",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(autouse=True, scope="module")
def _load_each_checkpoint_once():
    """Generating MNIST-1D takes seconds; reuse each checkpoint's model and data.

    Sharing one model object across runs also checks that a run leaves it untouched.
    """
    cache = {}
    original = analysis_module.open_checkpoint  # cli.surface imports it when it runs

    def cached(path, device="cpu", sources=None):
        key = (str(path), str(device), sources)
        if key not in cache:
            cache[key] = original(path, device=device, sources=sources)
        return cache[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(analysis_module, "open_checkpoint", cached)
    yield
    patch.undo()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _arrays(path):
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(
            lambda n, o: found.setdefault(n, o[...]) if isinstance(o, h5py.Dataset) else None
        )
        return found, {k: v for k, v in f.attrs.items() if not k.endswith("_version")}


@pytest.fixture(scope="module")
def evaluated(mnist1d_teacher, mnist1d_student):
    """What `flatscape evaluate --split both` reports, from the function behind it."""
    bundle = load_dataset("mnist1d")
    reports = {}
    for name, path in (("teacher", mnist1d_teacher), ("student", mnist1d_student)):
        model, _ = load_checkpoint(path)
        reports[name] = {
            "train": evaluate(model, bundle.train_eval),
            "test": evaluate(model, bundle.test),
        }
    return reports


def test_origin_equals_flatscape_evaluate(tmp_path, mnist1d_teacher, evaluated):
    out = tmp_path / "s.h5"
    result = run(
        "surface",
        mnist1d_teacher,
        "--x",
        "-1:1:3",
        "--split",
        "both",
        "--threads",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    reference = evaluated["teacher"]
    store = SurfaceStore.read(out)
    for split in ("train", "test"):
        loss, acc = store.arrays[f"{split}_loss"], store.arrays[f"{split}_acc"]
        assert loss[1] == pytest.approx(reference[split]["loss"], rel=1e-5)
        assert acc[1] == pytest.approx(100 * reference[split]["accuracy"], abs=1e-9)
        assert loss[0] != loss[1]
    attrs = store.attrs
    assert attrs["normalization"] == "filter" and attrs["ignore"] == "biasbn"
    assert attrs["dataset"] == "mnist1d" and attrs["train_examples"] == 4000
    assert attrs["bn_mode"] == "eval" and attrs["axis_order"] == "y,x"


def test_interpolation_reaches_the_other_checkpoint_at_one(
    tmp_path, mnist1d_teacher, mnist1d_student, evaluated
):
    out = tmp_path / "i.h5"
    result = run(
        "surface",
        mnist1d_teacher,
        "--direction",
        f"interp:{mnist1d_student}",
        "--x",
        "0:1:2",
        "--split",
        "both",
        "--threads",
        "1",
        "--quiet",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    teacher, student = evaluated["teacher"], evaluated["student"]
    store = SurfaceStore.read(out)
    for split in ("train", "test"):
        assert store.arrays[f"{split}_loss"][0] == pytest.approx(teacher[split]["loss"], rel=1e-5)
        assert store.arrays[f"{split}_loss"][1] == pytest.approx(student[split]["loss"], rel=1e-5)
        assert store.arrays[f"{split}_acc"][1] == pytest.approx(100 * student[split]["accuracy"])
    assert store.attrs["direction"] == "interp" and store.attrs["normalization"] == "none"


def test_eigen_directions_and_options(tmp_path, mnist1d_teacher):
    out = tmp_path / "e.h5"
    result = run(
        "surface",
        mnist1d_teacher,
        "--direction",
        "eigen",
        *SMALL,
        "--out",
        out,
        "--json",
        tmp_path / "e.json",
    )
    assert result.exit_code == 0, result.output
    store = SurfaceStore.read(out)
    assert store.attrs["x_direction"] == "eigenvector 1" and len(store.attrs["eigenvalues"]) == 2
    dx, dy = store.directions()
    flat = [np.concatenate([t.numpy().ravel() for t in d.values()]) for d in (dx, dy)]
    assert np.linalg.norm(flat[0]) == pytest.approx(1, abs=1e-5)
    assert abs(flat[0] @ flat[1]) < 1e-4
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["points"] == 6 and summary["origin"] is None
    memory = summary["memory"]  # default budget: half the available memory, or none known
    assert memory["budget"] is None or memory["budget"] >= memory["forward_bytes"] > 0
    assert memory["block_points"] >= 6 and memory["peak"] > 0
    wrong = run(
        "surface",
        mnist1d_teacher,
        "--direction",
        "eigen",
        "--normalization",
        "filter",
        *SMALL,
        "--out",
        tmp_path / "f.h5",
    )
    assert_one_line_error(wrong, "--normalization filter")


def test_interrupted_run_resumes_to_the_same_file(tmp_path, mnist1d_teacher, monkeypatch):
    full, part = tmp_path / "full.h5", tmp_path / "part.h5"
    assert run("surface", mnist1d_teacher, *SMALL, "--out", full).exit_code == 0
    original = loss_surface_module.compute_surface

    def interrupted(evaluator, data, coords, pending, write, progress):
        def write_then_stop(indices, values):
            write(indices, values)
            raise KeyboardInterrupt

        original(evaluator, data, coords, pending, write_then_stop, progress, max_block=2)

    monkeypatch.setattr(loss_surface_module, "compute_surface", interrupted)
    stopped = run("surface", mnist1d_teacher, *SMALL, "--out", part)
    assert stopped.exit_code == 130 and "--resume" in stopped.stderr
    assert SurfaceStore.read(part).done.sum() == 2
    monkeypatch.setattr(loss_surface_module, "compute_surface", original)
    assert_one_line_error(run("surface", mnist1d_teacher, *SMALL, "--out", part), "--resume")
    other = run("surface", mnist1d_teacher, *SMALL[:-1], "--seed", "1", "--resume", "--out", part)
    assert_one_line_error(other, "other settings (seed")
    resumed = run("surface", mnist1d_teacher, *SMALL, "--resume", "--out", part)
    assert resumed.exit_code == 0, resumed.output
    a, attrs_a = _arrays(full)
    b, attrs_b = _arrays(part)
    assert attrs_a == attrs_b
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


def test_a_second_writer_is_refused(tmp_path, mnist1d_teacher):
    out = tmp_path / "s.h5"
    assert run("surface", mnist1d_teacher, *SMALL, "--out", out).exit_code == 0
    holder = SurfaceStore.open_for_writing(out, _spec_of(out), resume=True)
    try:
        result = run("surface", mnist1d_teacher, *SMALL, "--resume", "--out", out)
        assert_one_line_error(result, "another process")
    finally:
        holder.close()


def _spec_of(path):
    store = SurfaceStore.read(path)
    spec = SurfaceSpec(store.x, store.y, store.directions(), store.attrs["split"])
    store.close()
    return spec


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp.safetensors"
    model, meta = train_teacher(
        load_dataset("mnist1d"), arch="mlp", recipe=Recipe(epochs=1), seed=0
    )
    save_checkpoint(path, model, meta)
    return path


def test_bad_input_gives_exit_2_one_line_and_keeps_results(
    tmp_path, mnist1d_teacher, mlp_checkpoint, monkeypatch
):
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    out = tmp_path / "s.h5"
    assert run("surface", mnist1d_teacher, *SMALL, "--out", out).exit_code == 0
    before = out.read_bytes()
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["train_loss"] = np.zeros(3)
    cases = [
        (["--x", "1:-1:0", "--out", tmp_path / "a.h5"], "--x '1:-1:0'"),
        (
            ["--x", "-1:1:10000", "--y", "-1:1:1000", "--out", tmp_path / "b.h5"],
            "10,000,000 points",
        ),
        (
            ["--direction", f"interp:{mlp_checkpoint}", "--out", tmp_path / "c.h5"],
            "one architecture",
        ),
        (
            ["--direction", "interp:missing.safetensors", "--out", tmp_path / "c.h5"],
            "no checkpoint",
        ),
        (["--direction", "sideways", "--out", tmp_path / "c.h5"], "--direction 'sideways'"),
        (["--batch-size", "0", "--out", tmp_path / "c.h5"], "--batch-size '0'"),
        (["--max-memory", "3XB", "--out", tmp_path / "c.h5"], "memory size '3XB'"),
        (["--max-memory", "1KB", "--out", tmp_path / "c.h5"], "a forward pass of 1 example"),
        ([*SMALL, "--out", out, "--resume", "--max-memory", "1KB"], "a forward pass of"),
        (["--out", out], "--resume"),
        (["--out", out, "--resume", "--force"], "contradict"),
        ([*SMALL, "--out", out, "--resume", "--x", "-1:1:5"], "other settings (x grid"),
        (["--out", garbage, "--resume"], "not a readable HDF5"),
        (["--out", foreign, "--resume"], "not a flatscape surface"),
    ]
    for args, needle in cases:
        result = run("surface", mnist1d_teacher, *args)
        assert_one_line_error(result, needle)
    assert out.read_bytes() == before
    for path, needle in [(garbage, "not a readable HDF5"), (foreign, "not a flatscape surface")]:
        assert_one_line_error(run("plot", path, "--out", tmp_path / "g.png"), needle)
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "c.h5").exists()


def test_plot_renders_every_kind_from_cli_files(tmp_path, mnist1d_teacher):
    two_d, one_d = tmp_path / "s.h5", tmp_path / "c.h5"
    assert run("surface", mnist1d_teacher, *SMALL, "--out", two_d).exit_code == 0
    assert (
        run(
            "surface",
            mnist1d_teacher,
            "--x",
            "-1:1:3",
            "--samples",
            "100",
            "--quiet",
            "--split",
            "both",
            "--out",
            one_d,
        ).exit_code
        == 0
    )
    for kind in ("contour", "filled", "heatmap", "surface3d"):
        result = run(
            "plot", two_d, "--kind", kind, "--out", tmp_path / f"{kind}.png", "--levels", "5"
        )
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{kind}.png").stat().st_size > 1000
    result = run(
        "plot",
        one_d,
        one_d,
        "--kind",
        "line",
        "--label",
        "a",
        "--label",
        "b",
        "--log",
        "--out",
        tmp_path / "line.svg",
    )
    assert result.exit_code == 0, result.output
    assert_one_line_error(run("plot", two_d, "--out", tmp_path / "line.svg"), "--force")
    assert_one_line_error(
        run("plot", two_d, "--levels", "many", "--out", tmp_path / "x.png"), "--levels"
    )
    assert_one_line_error(
        run("plot", one_d, "--kind", "heatmap", "--out", tmp_path / "x.png"), "1D"
    )


def test_help_says_how_many_points_the_default_grid_has():
    result = run("surface", "--help")
    assert result.exit_code == 0 and "2,601 points" in result.output
    assert "Example" in run("plot", "--help").output
