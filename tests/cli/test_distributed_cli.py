"""`flatscape surface` and `flatscape hessian` under torchrun: 2 gloo processes on 127.0.0.1.

Each torchrun gets a free port (bound to port 0 first) and a time limit; the results are
compared with the same command in one process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from landscape.distributed.surface import FAILURE_VARIABLE
from landscape.surface.store import SurfaceStore

GRID = ["--x", "-1:1:5", "--y", "-0.5:0.5:4", "--samples", "300", "--batch-size", "100"]
POINTS = 20
slow = pytest.mark.slow  # each torchrun starts three Python processes (~15 s on this machine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, env=None, timeout=180) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "cli.main",
        *[str(a) for a in args],
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def run_single(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def contents(path):
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(
            lambda n, o: found.setdefault(n, o[...]) if isinstance(o, h5py.Dataset) else None
        )
        attrs = {k: v for k, v in f.attrs.items() if not k.endswith("_version")}
        return found, attrs


def assert_same_surface(path, reference, done=None):
    """Equal arrays and attributes; with ``done``, only the points it marks are compared."""
    a, attrs_a = contents(path)
    b, attrs_b = contents(reference)
    assert attrs_a == attrs_b
    assert set(a) == set(b)
    for key in a:
        if done is not None and key.endswith(("_loss", "_acc")):
            np.testing.assert_allclose(a[key][done], b[key][done], rtol=1e-6, err_msg=key)
        elif key.endswith(("_loss", "_acc")):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
        elif done is None:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(mnist1d_teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "single.h5"
    run_single("surface", mnist1d_teacher, *GRID, "--threads", "1", "--quiet", "--out", path)
    return path


@slow
def test_two_processes_write_the_single_process_file(mnist1d_teacher, reference, tmp_path):
    out = tmp_path / "two.h5"
    result = torchrun("surface", mnist1d_teacher, *GRID, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_surface(out, reference)
    summary = [line for line in result.stdout.splitlines() if line.startswith(str(out))]
    assert len(summary) == 1 and f"{POINTS} points ({POINTS} computed" in summary[0]
    assert not (tmp_path / "two.h5.lock").exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_rank_0_prints_a_user_error(rank, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", rank)  # what torchrun sets; every rank gets the same error
    result = CliRunner().invoke(
        cli, ["surface", str(tmp_path / "none.safetensors"), "--out", "s.h5"]
    )
    assert result.exit_code == 2
    assert len(error_lines(result.stderr)) == (1 if rank == "0" else 0)


@slow
def test_a_killed_rank_leaves_a_file_that_resume_completes(mnist1d_teacher, reference, tmp_path):
    out = tmp_path / "killed.h5"
    # rank 1 exits like a killed process (no cleanup) once it has computed 4 points
    killed = torchrun(
        "surface", mnist1d_teacher, *GRID, "--out", out, env={FAILURE_VARIABLE: "1:4:exit"}
    )
    assert killed.returncode != 0
    (line,) = error_lines(killed.stderr)
    match = re.search(rf"(\d+) of {POINTS} points are saved in {re.escape(str(out))}", line)
    assert match and line.endswith("continue with --resume"), line
    with SurfaceStore.read(out) as store:
        done = store.done.copy()
    # the first round (8 points per rank) is saved; in the second, rank 0's own chunk is
    # saved unless torchrun stopped rank 0 before it finished it
    assert int(done.sum()) == int(match.group(1)) and int(done.sum()) in (16, 18)
    assert_same_surface(out, reference, done=done)
    resumed = torchrun("surface", mnist1d_teacher, *GRID, "--out", out, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_surface(out, reference)


@slow
def test_hessian_on_two_processes_matches_one(mnist1d_teacher, tmp_path):
    args = ["--top-k", "3", "--trace", "--trace-matvecs", "20", "--samples", "300", "--float64"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    run_single("hessian", mnist1d_teacher, *args, "--threads", "1", "--quiet", "--json", one)
    result = torchrun("hessian", mnist1d_teacher, *args, "--json", two)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    np.testing.assert_allclose(b["eigenvalues"], a["eigenvalues"], rtol=1e-5)
    assert b["trace"]["estimate"] == pytest.approx(a["trace"]["estimate"], rel=1e-5)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-12)
    assert b["data"]["samples"] == a["data"]["samples"] == 300 and b["processes"] == 2
    assert b["data"]["batch_size"] == 150 and b["matvecs"] == a["matvecs"]
    assert result.stdout.count("Hessian-vector products") == 1  # only rank 0 prints


def test_commands_that_do_not_split_their_work_refuse_torchrun(monkeypatch):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["evaluate", "x.safetensors"])
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert "flatscape evaluate runs in one process" in line and "hessian, surface" in line


@slow
def test_hessian_batches_on_two_processes_are_the_single_process_batches(mnist1d_teacher, tmp_path):
    """--batch-size 100 over 300 examples: whole batches per process (2 + 1), cut once."""
    args = ["--top-k", "2", "--samples", "300", "--batch-size", "100", "--float64"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    run_single("hessian", mnist1d_teacher, *args, "--threads", "1", "--quiet", "--json", one)
    result = torchrun("hessian", mnist1d_teacher, *args, "--json", two)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    np.testing.assert_allclose(b["eigenvalues"], a["eigenvalues"], rtol=1e-10)
    assert b["data"]["batch_size"] == a["data"]["batch_size"] == 100
    assert not b["data"]["graphs_kept"] and b["matvecs"] == a["matvecs"]
