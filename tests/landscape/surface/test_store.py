import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.surface.directions import random_direction
from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points
from landscape.surface.store import SurfaceSpec, SurfaceStore
from tests.landscape.surface_problems import classification_data, mlp, reference_loss

CE = nn.functional.cross_entropy


class Injected(Exception):
    pass


def _setup(x=np.linspace(-1, 1, 5), y=np.linspace(-0.5, 0.5, 3), seed=0, split="both"):
    model = mlp()
    batches = classification_data([7, 5, 3], (6,))
    generator = torch.Generator().manual_seed(seed)
    directions = [random_direction(model, generator) for _ in range(1 if y is None else 2)]
    spec = SurfaceSpec(x, y, directions, split, settings={"seed": seed, "normalization": "filter"})
    return model, batches, spec


def _run(path, spec, model, batches, resume=False, force=False, fail_after=None, max_block=4):
    store = SurfaceStore.open_for_writing(path, spec, resume=resume, force=force)
    data = {s: batches for s in store.splits}
    evaluator = SurfaceEvaluator(model, CE, store.directions(), "never")
    blocks = 0

    def progress(n):
        nonlocal blocks
        blocks += 1
        if fail_after is not None and blocks >= fail_after:
            raise Injected

    with store:
        coords = grid_points(store.x, store.y)
        compute_surface(
            evaluator, data, coords, store.pending(), store.write, progress, max_block=max_block
        )
    return evaluator


def _contents(path):
    with h5py.File(path, "r") as f:
        arrays = {}
        f.visititems(
            lambda name, obj: (
                arrays.setdefault(name, obj[...]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        return arrays, dict(f.attrs)


def test_stored_values_follow_the_layout_and_non_square_orientation(tmp_path):
    model, batches, spec = _setup(x=np.array([-1.0, 0.0, 0.5, 1.0]), y=np.array([-0.2, 0.4]))
    _run(tmp_path / "s.h5", spec, model, batches)
    store = SurfaceStore.read(tmp_path / "s.h5")
    assert store.shape == (2, 4) and store.arrays["train_loss"].shape == (2, 4)
    assert store.attrs["axis_order"] == "y,x" and store.attrs["flatscape_schema"] == 1
    assert store.done.all()
    dx, dy = spec.directions
    for j, b in enumerate(spec.y):
        for i, a in enumerate(spec.x):
            loss, acc = reference_loss(model, batches, [(a, dx), (b, dy)])
            assert store.arrays["train_loss"][j, i] == pytest.approx(loss, rel=1e-12)
            assert store.arrays["test_acc"][j, i] == pytest.approx(acc, abs=1e-12)
    for name, tensor in dx.items():
        assert torch.equal(store.directions()[0][name], tensor)


def test_loss_landscape_plot_scripts_reading_pattern_gets_the_orientation_right(tmp_path):
    """plot_2D.py does X, Y = meshgrid(x, y); Z = f['train_loss'][:]; contour(X, Y, Z)."""
    model, batches, spec = _setup(x=np.linspace(-1, 1, 4), y=np.array([-0.3, 0.1, 0.6]))
    _run(tmp_path / "s.h5", spec, model, batches)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        x, y = f["xcoordinates"][:], f["ycoordinates"][:]
        X, Y = np.meshgrid(x, y)
        Z = np.array(f["train_loss"][:])
        acc = np.array(f["train_acc"][:])
    assert Z.shape == X.shape == (3, 4)
    j, i = 2, 1
    steps = [(X[j, i], spec.directions[0]), (Y[j, i], spec.directions[1])]
    loss, percent = reference_loss(model, batches, steps)
    assert Z[j, i] == pytest.approx(loss, rel=1e-12)
    assert acc[j, i] == pytest.approx(percent)  # percent, as plot_1D.py's 0..100 axis expects
    assert percent > 1


def test_a_run_killed_part_way_and_resumed_gives_the_same_file(tmp_path):
    model, batches, spec = _setup()
    _run(tmp_path / "full.h5", spec, model, batches)
    with pytest.raises(Injected):
        _run(tmp_path / "part.h5", spec, model, batches, fail_after=2)
    partial = SurfaceStore.read(tmp_path / "part.h5")
    assert 0 < partial.done.sum() < partial.done.size
    assert np.isnan(partial.arrays["train_loss"][~partial.done]).all()
    partial.close()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    _run(tmp_path / "part.h5", spec, model, batches, resume=True)
    # only the missing points were computed: one forward per (point, batch, split)
    assert len(calls) == (15 - 8) * 3 * 2
    full, full_attrs = _contents(tmp_path / "full.h5")
    resumed, resumed_attrs = _contents(tmp_path / "part.h5")
    assert full.keys() == resumed.keys() and full_attrs == resumed_attrs
    for key in full:
        np.testing.assert_array_equal(resumed[key], full[key], err_msg=key)


def test_resume_refuses_a_file_made_with_other_settings(tmp_path):
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    _run(path, spec, model, batches)
    before = path.read_bytes()
    for other in [
        _setup(seed=1)[2],  # other seed: other directions and settings
        _setup(x=np.linspace(-1, 1, 6))[2],
        _setup(y=None)[2],
        _setup(split="train")[2],
    ]:
        with pytest.raises(LandscapeInputError, match="other settings"):
            SurfaceStore.open_for_writing(path, other, resume=True)
    same_settings = _setup()[2]
    same_settings.directions[1]["0.weight"] = same_settings.directions[1]["0.weight"] * 2
    with pytest.raises(LandscapeInputError, match="y direction '0.weight'"):
        SurfaceStore.open_for_writing(path, same_settings, resume=True)
    assert path.read_bytes() == before
    assert not Path(str(path) + ".lock").exists()


def test_existing_results_are_kept_unless_resume_or_force(tmp_path):
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    _run(path, spec, model, batches)
    before = path.read_bytes()
    with pytest.raises(LandscapeInputError, match="--resume.*--force"):
        SurfaceStore.open_for_writing(path, spec)
    assert path.read_bytes() == before
    with SurfaceStore.open_for_writing(path, spec, force=True) as store:
        assert not store.done.any()
    with pytest.raises(LandscapeInputError, match="contradict"):
        SurfaceStore.open_for_writing(path, spec, resume=True, force=True)


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path):
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    with SurfaceStore.open_for_writing(path, spec):
        with pytest.raises(LandscapeInputError, match="another process"):
            SurfaceStore.open_for_writing(path, spec, resume=True)
        # another process (plain fcntl, no torch import) cannot take the lock either
        code = (
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except BlockingIOError:\n    sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", code, str(path) + ".lock"])
        assert other.returncode == 3
        reader = SurfaceStore.read(path)  # reading during a run is fine
        assert reader.shape == (3, 5)
    with SurfaceStore.open_for_writing(path, spec, resume=True):
        pass


@pytest.mark.parametrize("content", ["foreign", "garbage", "truncated", "missing-key"])
def test_corrupted_or_foreign_files_are_one_line_user_errors(tmp_path, content):
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    if content == "foreign":
        with h5py.File(path, "w") as f:
            f["weights"] = np.zeros(3)
    elif content == "garbage":
        path.write_bytes(b"not an hdf5 file at all\n" * 10)
    else:
        _run(path, spec, model, batches)
        if content == "truncated":
            path.write_bytes(path.read_bytes()[:3000])
        else:
            with h5py.File(path, "r+") as f:
                del f["done"]
    before = path.read_bytes()
    for attempt in (
        lambda: SurfaceStore.read(path),
        lambda: SurfaceStore.open_for_writing(path, spec, resume=True),
    ):
        with pytest.raises(LandscapeInputError) as err:
            attempt()
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert path.read_bytes() == before


BAD_ARRAYS = {
    "train_loss as strings": (
        "train_loss",
        np.array([["a"] * 5] * 3, dtype=object),
        "string values",
    ),
    "train_loss as bytes": ("train_loss", np.array([[b"ab"] * 5] * 3), "string values"),
    "train_loss as a group": ("train_loss", None, "a group"),
    "train_loss complex": ("train_loss", np.full((3, 5), 1 + 2j), "complex128 values"),
    "train_loss int8": ("train_loss", np.full((3, 5), 4, dtype=np.int8), "int8 values"),
    "train_loss of another shape": ("train_loss", np.zeros((5, 3)), "shape (5, 3)"),
    "done as int8": ("done", np.ones((3, 5), dtype=np.int8), "int8 values"),
    "a NaN coordinate": ("xcoordinates", np.array([-1, -0.5, np.nan, 0.5, 1]), "NaN, inf"),
    "unordered coordinates": ("ycoordinates", np.array([0.5, 0.0, -0.5]), "unordered"),
    "complex coordinates": ("xcoordinates", np.linspace(-1, 1, 5) + 0j, "complex128"),
    "a direction as strings": (
        "directions/x/0.weight",
        np.array(["w"], dtype=object),
        "string values",
    ),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_stored_arrays_of_another_dtype_or_shape_are_refused_on_opening(tmp_path, case):
    key, bad, needle = BAD_ARRAYS[case]
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    _run(path, spec, model, batches)
    with h5py.File(path, "r+") as f:
        del f[key]
        if bad is None:
            f.create_group(key)
        elif bad.dtype == object:
            f.create_dataset(key, data=bad, dtype=h5py.string_dtype())
        else:
            f[key] = bad
    before = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning either
        for attempt in (
            lambda: SurfaceStore.read(path),
            lambda: SurfaceStore.open_for_writing(path, spec, resume=True),
        ):
            with pytest.raises(LandscapeInputError) as err:
                attempt()
            message = str(err.value)
            assert "\n" not in message and str(path) in message, message
            assert f"({key}: " in message and needle in message, message
    assert path.read_bytes() == before
    assert not path.with_name(path.name + ".lock").exists()


def test_nan_directions_and_settings_survive_the_round_trip(tmp_path):
    """NaN weights give NaN directions: the file just made resumes, NaN points are gaps."""
    model, batches, spec = _setup(y=None)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    spec.directions[0]["0.weight"][0, 0] = float("nan")
    spec.settings["lr"] = float("nan")
    path = tmp_path / "s.h5"
    _run(path, spec, model, batches)
    with SurfaceStore.open_for_writing(path, spec, resume=True) as store:
        assert store.done.all() and np.isnan(store.arrays["train_loss"]).all()


def test_an_eigenvalue_map_is_not_resumed_as_a_surface(tmp_path):
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    _run(path, spec, model, batches)
    as_map = SurfaceSpec(spec.x, spec.y, spec.directions, "train", spec.settings,
                         quantities=("lambda_max", "lambda_min", "train_loss"))  # fmt: skip
    with pytest.raises(LandscapeInputError, match="made by `flatscape surface`, not `flatscape"):
        SurfaceStore.open_for_writing(path, as_map, resume=True)


def test_a_grid_that_differs_only_past_its_text_names_the_point(tmp_path):
    model, batches, spec = _setup()
    path = tmp_path / "s.h5"
    _run(path, spec, model, batches)
    moved = SurfaceSpec(spec.x.copy(), spec.y, spec.directions, spec.split, spec.settings)
    moved.x[2] = 1e-9
    with pytest.raises(LandscapeInputError, match=r"x grid: file -1:1:5 with point 2 at 0\.0, "
                       r"now -1:1:5 with it at 1e-09"):  # fmt: skip
        SurfaceStore.open_for_writing(path, moved, resume=True)


SCRIPT = textwrap.dedent(
    """
    import sys, time, torch, numpy as np
    sys.path.insert(0, sys.argv[2])
    from surface_problems import classification_data, mlp
    from torch import nn
    from landscape.surface.directions import random_direction
    from landscape.surface.store import SurfaceSpec, SurfaceStore
    from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points
    torch.set_num_threads(1)
    model, batches = mlp(), classification_data([7, 5, 3], (6,))
    g = torch.Generator().manual_seed(0)
    spec = SurfaceSpec(np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3),
                       [random_direction(model, g), random_direction(model, g)], "both",
                       settings={"seed": 0, "normalization": "filter"})
    store = SurfaceStore.open_for_writing(sys.argv[1], spec, resume=True)
    ev = SurfaceEvaluator(model, nn.functional.cross_entropy, store.directions(), "never")
    blocks = []
    def slow(n):
        blocks.append(n)
        print("block", flush=True)
        if len(blocks) >= 2:
            time.sleep(float(sys.argv[3]))
    compute_surface(ev, {"train": batches, "test": batches}, grid_points(store.x, store.y),
                    store.pending(), store.write, slow, max_block=2)
    store.close()
    """
)


@pytest.mark.slow
def test_a_process_killed_with_sigkill_leaves_a_file_that_resumes_to_the_same_values(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    here = str(Path(__file__).parent.parent)  # where surface_problems.py lives
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), here, "30"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "block"
    assert proc.stdout.readline().strip() == "block"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = SurfaceStore.read(path)
    assert killed.done.sum() == 4
    killed.close()
    model, batches, spec = _setup()
    _run(path, spec, model, batches, resume=True)
    _run(tmp_path / "full.h5", spec, model, batches)
    a, attrs_a = _contents(path)
    b, attrs_b = _contents(tmp_path / "full.h5")
    assert attrs_a == attrs_b
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not os.path.exists(str(path) + ".lock")
