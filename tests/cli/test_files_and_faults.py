"""Files and faults: every writing command plans its outputs before working, and a full or
read-only disk is one line, exit 2, no temporary file or lock left, no result lost."""

import contextlib
import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import cli
from cli.outputs import OutputError, OutputPlan
from tests.cli.helpers import assert_one_line_error

FAST = ["--samples", "64", "--threads", "1"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def leftovers(folder: Path) -> list[Path]:
    """Temporary files and locks anywhere under ``folder``."""
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".lock"))]


@pytest.fixture(scope="module")
def files(tmp_path_factory, mnist1d_teacher):
    """A teacher, a finished 1D surface and a foreign state dict, in a folder of their own."""
    folder = tmp_path_factory.mktemp("inputs")
    teacher = folder / "teacher.safetensors"
    teacher.write_bytes(mnist1d_teacher.read_bytes())
    surface = folder / "s.h5"
    made = run("surface", teacher, "--x", "-1:1:3", "--out", surface, "--quiet", *FAST)
    assert made.exit_code == 0, made.output
    from distill.checkpoint import load_checkpoint

    model, _ = load_checkpoint(teacher)
    foreign = folder / "foreign.pt"
    torch.save(model.state_dict(), foreign)
    return {"teacher": teacher, "surface": surface, "foreign": foreign}


def writing_commands(f: dict, out: Path) -> dict[str, list]:
    """Each writing command, its arguments up to the output whose path is ``out``."""
    t = f["teacher"]
    return {
        "train": ["train", "--epochs", "1", "--train-size", "200", "--out", out, "--quiet"],
        "distill": ["distill", "--teacher", t, "--generations", "1", "--epochs", "1",
                    "--out-dir", out.parent, "--json", out, "--quiet"],
        "evaluate": ["evaluate", t, "--json", out],
        "hessian": ["hessian", t, "--top-k", "1", *FAST, "--json", out],
        "sharpness": ["sharpness", t, "--measure", "average", "--geometry", "plain",
                      "--draws", "2", *FAST, "--json", out],
        "surface": ["surface", t, "--x", "-1:1:3", *FAST, "--quiet", "--out", out],
        "surface-json": ["surface", t, "--x", "-1:1:3", *FAST, "--quiet",
                         "--out", out.with_name("other.h5"), "--json", out],
        "eigenmap": ["eigenmap", t, "--x", "-0.5:0.5:2", "--y", "none", *FAST, "--quiet",
                     "--out", out],
        "plot": ["plot", f["surface"], "--kind", "line", "--out", out],
        "export": ["export", f["surface"], "--csv", out],
        "import": ["import", f["foreign"], "--model", "cnn1d", "--dataset", "mnist1d",
                   "--out", out],
        "compare": ["compare", t, t, "--top-k", "1", "--trace-matvecs", "0",
                    "--line-points", "0", *FAST, "--allow-mixed", "--json", out],
        "align": ["align", t, "--to", t, "--out", out],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["evaluate", "hessian", "surface", "surface-json",
                                     "eigenmap", "plot", "export", "import", "compare",
                                     "sharpness", "align"])  # fmt: skip
def test_an_output_that_is_an_input_is_refused_even_with_force(tmp_path, files, command):
    victim = files["foreign"] if command == "import" else files["teacher"]
    if command in ("plot", "export"):
        victim = files["surface"]
    before = victim.read_bytes()
    args = writing_commands(files, victim)[command]
    result = run(*args, "--force")
    assert_one_line_error(result, "is the input")
    assert victim.read_bytes() == before
    assert not leftovers(victim.parent)


def test_two_outputs_on_one_path_are_refused_and_nothing_is_written(tmp_path, files):
    t, same = files["teacher"], tmp_path / "same.md"
    cases = [
        ["train", "--epochs", "1", "--out", same, "--json", same],
        ["train", "--epochs", "1", "--out", tmp_path / "t.safetensors",
         "--json", tmp_path / "t.log.jsonl"],  # the checkpoint's own log
        ["import", files["foreign"], "--model", "cnn1d", "--out", same, "--json", same],
        ["surface", t, "--x", "-1:1:3", "--out", same, "--json", tmp_path / "." / same.name],
        ["eigenmap", t, "--x", "-1:1:2", "--y", "none", "--out", same, "--json", same],
        ["hessian", t, "--json", same, "--per-layer-table", same],
        ["compare", t, t, "--json", same, "--markdown", same],
        ["compare", t, t, "--markdown", same, "--csv", same],
        ["compare", t, t, t, "--plane", "--plots", tmp_path, "--json", tmp_path / "plane.h5"],
        ["export", files["surface"], "--csv", same, "--npz", same],
        ["distill", "--teacher", t, "--out-dir", tmp_path, "--json", tmp_path / "gen1.log.jsonl"],
    ]  # fmt: skip
    for args in cases:
        assert_one_line_error(run(*args), "both name")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_symlink_to_an_input_is_the_input(tmp_path, files):
    link = tmp_path / "link.json"
    link.symlink_to(files["teacher"])
    before = files["teacher"].read_bytes()
    result = run("evaluate", files["teacher"], "--json", link, "--force")
    assert_one_line_error(result, "is the input")
    assert files["teacher"].read_bytes() == before


def test_existing_results_and_bad_names_are_refused_before_any_work(tmp_path, files):
    t = files["teacher"]
    report = tmp_path / "teacher.hess.json"
    report.write_text('{"mine": 1}\n')
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["surface", t, "--x", "-1:1:3", "--out", tmp_path / "n.h5", "--json", report],
         f"{report} exists; pass --force"),
        (["eigenmap", t, "--x", "-1:1:2", "--out", tmp_path / "n.h5", "--json", report],
         f"{report} exists; pass --force"),
        (["surface", t, "--out", ""], "--out '': give a file name"),
        (["hessian", t, "--json", ""], "--json '': give a file name"),
        (["evaluate", t, "--json", f"{tmp_path}/new/"], "as a folder does"),
        (["evaluate", t, "--json", "/dev/null"], "is not a regular file"),
        (["surface", t, "--out", folder], "is a directory"),
        (["hessian", t, "--json", folder], "is a directory"),
        (["train", "--out", a_file / "t.safetensors"], "is a file, not a folder"),
        (["compare", t, t, "--plots", a_file], "is a file"),
        (["reproduce", "--out-dir", a_file], "is a file"),
    ]  # fmt: skip
    for args, needle in cases:
        assert_one_line_error(run(*args), needle)
    assert report.read_text() == '{"mine": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder", "teacher.hess.json"]


def test_compare_plots_over_another_plane_needs_force_then_replaces_it(
    tmp_path, files, mnist1d_student
):
    from distill.checkpoint import save_checkpoint
    from distill.data import load_dataset
    from distill.trainer import Recipe, train_teacher

    third = tmp_path.parent / "third.safetensors"
    model, meta = train_teacher(load_dataset("mnist1d"), recipe=Recipe(epochs=1), seed=1)
    save_checkpoint(third, model, meta)
    args = ["compare", files["teacher"], mnist1d_student, third, "--plane", "--plots", tmp_path,
            "--top-k", "1", "--trace-matvecs", "0", "--line-points", "0", *FAST,
            "--quiet"]  # fmt: skip
    assert run(*args, "--plane-points", "3").exit_code == 0
    plane = (tmp_path / "plane.h5").read_bytes()
    assert_one_line_error(run(*args, "--plane-points", "4"), "plane.h5 exists; pass --force")
    assert (tmp_path / "plane.h5").read_bytes() == plane
    again = run(*args, "--plane-points", "4", "--force")
    assert again.exit_code == 0, again.output
    import h5py

    with h5py.File(tmp_path / "plane.h5", "r") as f:
        assert f["xcoordinates"].shape == (4,)


# -- the file system says no -------------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("command", ["train", "distill", "evaluate", "hessian", "sharpness",
                                     "surface", "surface-json", "eigenmap", "plot", "export",
                                     "import", "compare", "align"])  # fmt: skip
def test_a_full_disk_is_one_line_and_keeps_the_old_result(tmp_path, files, command, monkeypatch):
    """Every write fails with ENOSPC: the existing output stays, no temporary file is left."""
    monkeypatch.setattr("landscape.atomic_files._flush_to_disk", _no_space)
    monkeypatch.setattr("distill.checkpoint.save_file", _no_space)
    out = tmp_path / ("result.png" if command == "plot" else "result.out")
    out.write_bytes(b"the old result")
    result = run(*writing_commands(files, out)[command], "--force")
    assert_one_line_error(result, "No space left on device")
    if command != "distill":  # distill fails at gen1's checkpoint, before its --json
        assert out.read_bytes() == b"the old result"
    assert not leftovers(tmp_path) and not leftovers(files["teacher"].parent)
    if command in ("evaluate", "hessian", "sharpness", "compare"):
        report = json.loads(result.stdout[result.stdout.index("{") :])
        assert report["checkpoint" if command != "compare" else "reference"]  # not lost
        assert "printed on stdout" in result.stderr
    if command in ("train", "distill"):
        assert "final metrics" in result.stderr  # what was computed is said


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A read-only file system where the tests may mount one, else a patched one."""
    folder = tmp_path / "ro"
    if _mount_tmpfs(folder, "size=1m,ro"):
        yield folder
        subprocess.run(["umount", str(folder)], check=False)
        return
    monkeypatch.setattr("cli.outputs.may_write", lambda path: False)
    monkeypatch.setattr("cli.outputs.read_only", lambda folder: True)
    yield folder


@pytest.mark.parametrize("command", ["train", "distill", "evaluate", "hessian", "sharpness",
                                     "surface", "eigenmap", "plot", "export", "import",
                                     "compare", "reproduce", "align"])  # fmt: skip
def test_a_read_only_disk_is_refused_before_any_work(read_only_folder, files, command):
    out = read_only_folder / "result.out"
    commands = {**writing_commands(files, out), "reproduce": ["reproduce", "--out-dir", out]}
    result = run(*commands[command])
    assert_one_line_error(result, "Read-only file system")
    assert str(read_only_folder) in result.stderr


def _real_run(args, cwd, limit_bytes=None):
    """The command in its own process, optionally with a file-size limit (EFBIG)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)], cwd=cwd, capture_output=True,
        text=True, preexec_fn=limit if limit_bytes else None, timeout=300,
    )  # fmt: skip


def test_surface_on_a_file_size_limit_ends_cleanly(tmp_path, files):
    """HDF5 failing to write used to crash h5py at exit (SIGSEGV) and leave a lock behind."""
    args = ["surface", files["teacher"], "--x", "-1:1:21", "--y", "-1:1:21", *FAST, "--quiet",
            "--out", tmp_path / "big.h5"]  # fmt: skip
    done = _real_run(args, tmp_path, limit_bytes=20_000)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'big.h5'}: File too large"]
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk(tmp_path, files):
    """On a tiny tmpfs (where the tests may mount one): surface, hessian --json, train."""
    disk = tmp_path / "full"
    if not _mount_tmpfs(disk, "size=64k"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        filler = open(disk / "filler", "wb")  # noqa: SIM115 (filled to the last byte)
        try:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            filler.close()
        surface = _real_run(["surface", files["teacher"], "--x", "-1:1:21", "--y", "-1:1:21",
                             *FAST, "--quiet", "--out", disk / "s.h5"], tmp_path)  # fmt: skip
        assert surface.returncode == 2, surface.stderr
        assert "No space left on device" in surface.stderr
        hessian = _real_run(["hessian", files["teacher"], "--top-k", "1", *FAST,
                             "--json", disk / "h.json"], tmp_path)  # fmt: skip
        assert hessian.returncode == 2 and "printed on stdout" in hessian.stderr
        assert json.loads(hessian.stdout[hessian.stdout.index("{") :])["eigenvalues"]
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# -- the plan as a property ----------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "sub/a", "./a", "sub/../a", "", "-", "in", "dir", "file/x"])


@settings(max_examples=200, deadline=None)
@given(outputs=st.lists(st.tuples(NAMES, st.booleans()), max_size=4),
       inputs=st.lists(NAMES, max_size=3), force=st.booleans(), resume=st.booleans())  # fmt: skip
def test_the_plan_refuses_only_with_output_error(tmp_path_factory, outputs, inputs, force, resume):
    root = tmp_path_factory.mktemp("plan")
    (root / "in").write_text("input")
    (root / "dir").mkdir()
    (root / "file").write_text("a file")
    plan = OutputPlan(force, resume)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        try:
            for n, (name, folder) in enumerate(outputs):
                if folder:
                    plan.folder(f"--f{n}", name)
                else:
                    plan.file(f"--o{n}", name, resumable=resume)
            plan.read("IN", *inputs)
            plan.check()
        except OutputError:
            return
        files = [o.path for o in plan.outputs]
        resolved = [os.path.realpath(p) for p in files]
        assert len(set(resolved)) == len(resolved)  # no two outputs on one path
        read = {os.path.realpath(p) for p in inputs if p and p != "-"}
        assert not read & set(resolved)  # no output is an input
        assert force or resume or not any(p.is_file() for p in files)
    finally:
        os.chdir(cwd)


def test_a_folder_another_command_is_writing_is_refused(tmp_path, files):
    """Two compares into one --plots folder, two reproduce runs into one --out-dir."""
    import fcntl

    busy = tmp_path / "busy"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running command holds it
    try:
        t = files["teacher"]
        result = run("compare", t, t, "--plots", busy, "--line-points", "0")
        assert_one_line_error(result, "is being written by another flatscape command")
        result = run("distill", "--teacher", t, "--out-dir", busy)
        assert_one_line_error(result, "is being written by another flatscape command")
    finally:
        os.close(fd)
    assert list(busy.iterdir()) == []


def test_the_data_file_a_checkpoint_records_is_an_input(tmp_path):
    """`evaluate U --json d.npz` would destroy the data U is read with."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.normal(size=(64, 8)).astype("float32"),
             y_train=rng.integers(0, 3, 64), x_test=rng.normal(size=(32, 8)).astype("float32"),
             y_test=rng.integers(0, 3, 32))  # fmt: skip
    model = tmp_path / "u.safetensors"
    made = run("train", "--data-file", data, "--model", "mlp", "--epochs", "1", "--out", model)
    assert made.exit_code == 0, made.output
    before = data.read_bytes()
    for command in (["evaluate", model], ["hessian", model, "--top-k", "1"]):
        result = run(*command, "--json", data, "--force")
        assert_one_line_error(result, f"is the input (the data recorded in {model})")
    assert data.read_bytes() == before


def test_compare_keeps_its_report_when_a_plot_cannot_be_written(tmp_path, files, monkeypatch):
    def full(fig, out, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))

    monkeypatch.setattr("cli.study.report.save_figure", full)
    t = files["teacher"]
    result = run("compare", t, t, "--top-k", "1", "--trace-matvecs", "0", "--line-points", "3",
                 *FAST, "--plots", tmp_path / "p", "--json", tmp_path / "r.json")  # fmt: skip
    assert_one_line_error(result, "lines.png: No space left on device; the report was printed")
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["models"][0]["lambda_1"] > 0
    assert not leftovers(tmp_path)


def test_a_command_refused_after_its_plan_leaves_no_folder(tmp_path):
    result = run("train", "--out", tmp_path / "n.safetensors", "--snapshots", "2",
                 "--data-kwargs", "{}")  # fmt: skip
    assert_one_line_error(result, "--data-kwargs")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_may_be_given_its_own_stamp_as_grid(tmp_path):
    from cli.reproduce import check_run_folder

    (tmp_path / "sweep.json").write_text("{}")
    check_run_folder(str(tmp_path), str(tmp_path / "sweep.json"))
    with pytest.raises(OutputError, match="is the input --grid"):
        check_run_folder(str(tmp_path), str(tmp_path / "report.json"))


def test_a_disk_that_fills_during_a_surface_keeps_the_points_and_resumes(
    tmp_path, files, monkeypatch
):
    """The second block of points cannot be written: the first is kept, --resume finishes."""
    from landscape.surface.store import SurfaceStore

    original, calls = SurfaceStore.write_arrays, []

    def fills_up(self, indices, values):
        calls.append(len(indices))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        original(self, indices, values)

    monkeypatch.setattr(SurfaceStore, "write_arrays", fills_up)
    out = tmp_path / "s.h5"
    args = ["surface", files["teacher"], "--x", "-1:1:9", *FAST, "--batch-size", "64",
            "--quiet", "--out", out]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    saved = calls[0]
    assert lines == [f"error: {out}: No space left on device: {saved} of 9 points are saved in "
                     f"{out}; continue with --resume"]  # fmt: skip
    assert not leftovers(tmp_path) and 0 < saved < 9
    monkeypatch.setattr(SurfaceStore, "write_arrays", original)
    resumed = run(*args[:-3], "--out", out, "--resume")  # without --quiet: the summary
    assert resumed.exit_code == 0, resumed.output
    assert f"9 points ({9 - saved} computed" in resumed.stdout
    with SurfaceStore.read(out) as store:
        assert store.done.all()
