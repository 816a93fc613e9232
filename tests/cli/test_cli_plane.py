"""`flatscape surface --plane`, `--direction pca --trajectory`, and `--snapshots`."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.data import load_dataset
from distill.losses import KDConfig
from distill.trainer import Recipe, evaluate, train_student, train_teacher
from landscape.surface.store import SurfaceStore
from tests.cli.helpers import assert_one_line_error

SMALL = ["--x", "auto:4", "--y", "auto:3", "--samples", "300", "--batch-size", "150",
         "--threads", "1", "--quiet"]  # fmt: skip


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def gen2(mnist1d_student):
    path = mnist1d_student.with_name("gen2.safetensors")
    if not path.exists():
        model, meta = train_student(mnist1d_student, KDConfig(4.0, 1.0),
                                    recipe=Recipe(epochs=2, lr=0.025))  # fmt: skip
        save_checkpoint(path, model, meta)
    return path


def test_the_plane_through_three_checkpoints_holds_their_losses(
    tmp_path, mnist1d_teacher, mnist1d_student, gen2
):
    out = tmp_path / "plane.h5"
    result = run("surface", "--plane", mnist1d_teacher, mnist1d_student, gen2, *SMALL,
                 "--split", "both", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    bundle = load_dataset("mnist1d")
    with SurfaceStore.read(out) as store:
        marks = store.extra("marks")
        axes = store.directions()
        attrs = store.attrs
    assert marks["labels"].tolist() == ["teacher", "gen1", "gen2"]
    x, y = marks["coordinates"][:, 0], marks["coordinates"][:, 1]
    assert x[0] == y[0] == y[1] == 0.0 and x[1] > 0 and y[2] > 0
    flat = [torch.cat([d[k].double().reshape(-1) for k in sorted(d)]) for d in axes]
    assert float(flat[0] @ flat[0]) == pytest.approx(1, abs=1e-6)
    assert float(flat[1] @ flat[1]) == pytest.approx(1, abs=1e-6)
    assert abs(float(flat[0] @ flat[1])) < 1e-6
    assert attrs["direction"] == "plane" and attrs["normalization"] == "none"
    for n, path in enumerate((mnist1d_teacher, mnist1d_student, gen2)):
        model, _ = load_checkpoint(path)
        for split, data in (("train", bundle.train_eval), ("test", bundle.test)):
            first = torch.utils.data.TensorDataset(*(t[:300] for t in data.tensors))
            expected = evaluate(model, first)
            assert marks[f"{split}_loss"][n] == pytest.approx(expected["loss"], rel=1e-5)
            assert marks[f"{split}_acc"][n] == pytest.approx(100 * expected["accuracy"])
    assert (
        "teacher at (0, 0)"
        in run(
            "surface",
            "--plane",
            mnist1d_teacher,
            mnist1d_student,
            gen2,
            *SMALL[:-1],
            "--split",
            "both",
            "--out",
            out,
            "--resume",
        ).output
    )

    figure = tmp_path / "plane.png"
    assert run("plot", out, "--out", figure).exit_code == 0
    assert figure.stat().st_size > 1000


def test_bad_planes_exit_2_and_leave_the_file(tmp_path, mnist1d_teacher, mnist1d_student, gen2):
    out = tmp_path / "plane.h5"
    ok = run("surface", "--plane", mnist1d_teacher, mnist1d_student, gen2, *SMALL, "--out", out)
    assert ok.exit_code == 0, ok.output
    before = out.read_bytes()
    same = run("surface", "--plane", mnist1d_teacher, mnist1d_teacher, gen2, *SMALL,
               "--out", out, "--force")  # fmt: skip
    assert_one_line_error(same, "three different models")
    wide = tmp_path / "wide.safetensors"
    model, meta = train_teacher(load_dataset("mnist1d"), recipe=Recipe(epochs=1), seed=0,
                                arch_overrides={"width": 8})  # fmt: skip
    save_checkpoint(wide, model, meta)
    other = run("surface", "--plane", mnist1d_teacher, mnist1d_student, wide, *SMALL,
                "--out", out, "--force")  # fmt: skip
    assert_one_line_error(other, "another model arguments")
    noisy = tmp_path / "noisy.safetensors"
    model, meta = train_teacher(load_dataset("mnist1d", label_noise=0.2), recipe=Recipe(epochs=1))
    save_checkpoint(noisy, model, meta)
    data = run("surface", "--plane", mnist1d_teacher, noisy, gen2, *SMALL, "--out", out, "--force")
    assert_one_line_error(data, "another dataset")
    both = run("surface", mnist1d_teacher, "--plane", mnist1d_teacher, mnist1d_student, gen2,
               *SMALL, "--out", out, "--force")  # fmt: skip
    assert_one_line_error(both, "not both")
    missing = run("surface", "--plane", mnist1d_teacher, tmp_path / "no.safetensors", gen2,
                  *SMALL, "--out", out, "--force")  # fmt: skip
    assert_one_line_error(missing, "not found")
    auto = run("surface", mnist1d_teacher, "--x", "auto", "--out", tmp_path / "r.h5")
    assert_one_line_error(auto, "auto ranges are for planes")
    assert out.read_bytes() == before


def test_snapshots_and_the_pca_plane_of_a_teacher_and_its_student(tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    plain = tmp_path / "plain.safetensors"
    common = ["--epochs", "4", "--threads", "1", "--quiet"]
    assert run("train", *common, "--out", plain).exit_code == 0
    result = run("train", *common, "--snapshots", "3", "--out", teacher)
    assert result.exit_code == 0, result.output
    snapshots = sorted((tmp_path / "teacher.snapshots").glob("*.safetensors"))
    assert [p.name for p in snapshots] == [f"epoch_{e:04d}.safetensors" for e in (0, 2, 4)]
    # snapshots leave training alone: the same weights as without them
    final, meta = load_checkpoint(teacher)
    without, _ = load_checkpoint(plain)
    last, last_meta = load_checkpoint(snapshots[-1])
    for name, tensor in final.state_dict().items():
        assert torch.equal(tensor, without.state_dict()[name])
        assert torch.equal(tensor, last.state_dict()[name])
    assert last_meta["role"] == "snapshot" and last_meta["snapshot_of"] == "teacher"
    assert last_meta["epoch"] == 4 and last_meta["arch"] == meta["arch"]

    again = run("train", *common, "--snapshots", "3", "--out", teacher)
    assert again.exit_code == 2  # the checkpoint exists (and its snapshots stay)
    distilled = run("distill", "--teacher", teacher, "--generations", "1", "--epochs", "4",
                    "--snapshots", "5", "--out-dir", tmp_path / "sd", "--quiet")  # fmt: skip
    assert distilled.exit_code == 0, distilled.output
    student = tmp_path / "sd" / "gen1.safetensors"
    out = tmp_path / "pca.h5"
    pca = run("surface", student, "--direction", "pca", "--trajectory",
              tmp_path / "teacher.snapshots", "--trajectory", tmp_path / "sd" / "gen1.snapshots",
              *SMALL, "--out", out)  # fmt: skip
    assert pca.exit_code == 0, pca.output
    with SurfaceStore.read(out) as store:
        paths = store.extra("paths")
        attrs = store.attrs
    assert paths["0/label"].tolist() == ["teacher"] and paths["1/label"].tolist() == ["gen1"]
    assert paths["0/epochs"].tolist() == [0, 2, 4]
    assert paths["1/epochs"].tolist() == [0, 1, 2, 3, 4]
    assert np.abs(paths["1/coordinates"][-1]).max() < 1e-6  # the student is the origin
    assert 0 < attrs["pca_explained_ratio_y"] <= attrs["pca_explained_ratio_x"] < 1

    few = run("train", *common, "--snapshots", "2", "--out", tmp_path / "few.safetensors")
    assert few.exit_code == 0
    refused = run(
        "surface",
        tmp_path / "few.safetensors",
        "--direction",
        "pca",
        "--trajectory",
        tmp_path / "few.snapshots",
        *SMALL,
        "--out",
        out,
        "--force",
    )
    assert_one_line_error(refused, "at least 3")
    assert SurfaceStore.read(out).extra("paths")  # the finished file is still there
    none = run("surface", student, "--direction", "pca", *SMALL, "--out", tmp_path / "n.h5")
    assert_one_line_error(none, "--trajectory")
