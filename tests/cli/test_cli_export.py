"""`flatscape export`: files written and reported, one-line errors that leave files alone."""

import xml.etree.ElementTree as ET

import numpy as np
from click.testing import CliRunner

from cli.main import cli
from landscape.surface.store import SurfaceStore
from tests.cli.helpers import assert_one_line_error
from tests.landscape.surface.test_export import _surface


def run(*args):
    return CliRunner().invoke(cli, ["export", *(str(a) for a in args)])


def test_export_writes_each_file_and_says_what_it_holds(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4)
    vtp, csv, npz = tmp_path / "s.vtp", tmp_path / "out" / "s.csv", tmp_path / "s.npz"
    result = run(surface, "--vtp", vtp, "--csv", csv, "--npz", npz, "--key", "test_loss", "--log")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"wrote {vtp} (20 points, 12 cells)",
        f"wrote {csv} (20 points)",
        f"wrote {npz} (20 points)",
    ]
    with SurfaceStore.read(surface) as store:
        test_loss = store.arrays["test_loss"].reshape(-1)
    points = ET.parse(vtp).getroot().find("PolyData/Piece/Points/DataArray").text.split()
    heights = np.array(points, float).reshape(-1, 3)[:, 2]
    np.testing.assert_allclose(heights, np.log(test_loss + 0.1))
    assert len(csv.read_text().splitlines()) == 1 + 20
    with np.load(npz) as arrays:
        np.testing.assert_array_equal(arrays["test_loss"].reshape(-1), test_loss)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.h5", "s.npz", "s.vtp"]


def test_1d_surface_reports_its_line_segments(tmp_path):
    surface = _surface(tmp_path / "c.h5", nx=6, ny=None)
    result = run(surface, "--vtp", tmp_path / "c.vtp", "--zmax", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {tmp_path / 'c.vtp'} (6 points, 5 cells)\n"


def test_bad_input_is_exit_2_and_one_line(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=3, ny=2)
    out = tmp_path / "o.vtp"
    cases = [
        ([tmp_path / "missing.h5", "--vtp", out], "no such surface file"),
        ([surface], "--vtp, --csv or --npz"),
        ([surface, "--vtp", out, "--key", "nope"], "--key 'nope'"),
        ([surface, "--vtp", out, "--zmax", "inf"], "--zmax inf"),
        ([surface, "--csv", tmp_path / "o.csv", "--log"], "--log shapes the VTP"),
    ]
    for args, needle in cases:
        assert_one_line_error(run(*args), needle)
    listed = run(surface, "--vtp", out, "--key", "x").stderr
    assert "choose one of train_loss, train_acc, test_loss, test_acc" in listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_an_existing_output_is_kept_without_force(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=3, ny=2)
    vtp, csv = tmp_path / "s.vtp", tmp_path / "s.csv"
    csv.write_text("mine\n")
    assert_one_line_error(run(surface, "--vtp", vtp, "--csv", csv), "pass --force")
    assert csv.read_text() == "mine\n" and not vtp.exists()  # nothing written at all
    result = run(surface, "--vtp", vtp, "--csv", csv, "--force")
    assert result.exit_code == 0, result.output
    assert csv.read_text().startswith("x,y,train_loss,") and vtp.exists()


def test_a_half_finished_surface_needs_partial(tmp_path):
    surface = _surface(tmp_path / "s.h5", nx=5, ny=4, done=np.arange(7))
    csv = tmp_path / "s.csv"
    result = run(surface, "--csv", csv, "--vtp", tmp_path / "s.vtp")
    assert_one_line_error(result, "7 of 20 points are done")
    assert "--partial" in result.stderr and "--resume" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
    result = run(surface, "--csv", csv, "--vtp", tmp_path / "s.vtp", "--partial")
    assert result.exit_code == 0, result.output
    assert "(7 points, 1 cell)" in result.stdout
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) == 20 and rows[7].split(",")[2] == "nan" and rows[7].endswith(",0")
