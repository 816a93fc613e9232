"""`flatscape align` and `surface --plane ... --align`: permuted students, same function."""

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from cli.study.planes import mark_lines
from distill.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from distill.data import load_dataset
from distill.safetensors_file import METADATA_KEY
from distill.trainer import Recipe, train_teacher
from landscape.pairs import parameter_distance
from landscape.surface.store import SurfaceStore
from tests.cli.helpers import assert_one_line_error

PLANE = ["--x", "auto:3", "--y", "auto:3", "--samples", "200", "--batch-size", "200",
         "--threads", "1", "--quiet"]  # fmt: skip


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _header(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()[METADATA_KEY])


def test_align_writes_the_student_permuted_with_its_provenance(
    tmp_path, mnist1d_teacher, mnist1d_student
):
    out = tmp_path / "gen1.aligned.safetensors"
    result = run("align", mnist1d_student, "--to", mnist1d_teacher, "--out", out,
                 "--threads", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "aligned to" in lines[0] and "weight distance" in lines[0]
    header, student_header = _header(out), _header(mnist1d_student)
    assert header["aligned_to"] == file_sha256(mnist1d_teacher)
    alignment = header["alignment"]
    assert alignment["student_sha256"] == file_sha256(mnist1d_student)
    assert alignment["distance_after"] < alignment["distance_before"]
    for key, value in student_header.items():
        if key != "weights_sha256":
            assert header[key] == value, key
    aligned, _ = load_checkpoint(out)
    student, _ = load_checkpoint(mnist1d_student)
    teacher, _ = load_checkpoint(mnist1d_teacher)
    names = [n for n, _ in teacher.named_parameters()]
    assert alignment["distance_after"] == pytest.approx(
        parameter_distance(teacher.state_dict(), aligned.state_dict(), names), rel=1e-9
    )
    x = load_dataset("mnist1d").test.tensors[0][:256]
    with torch.no_grad():
        torch.testing.assert_close(aligned(x), student(x), rtol=1e-5, atol=1e-5)
    assert not torch.equal(aligned.state_dict()["features.0.weight"],
                           student.state_dict()["features.0.weight"])  # fmt: skip

    again = run("align", mnist1d_student, "--to", mnist1d_teacher, "--out", out, "--json", "-",
                "--force", "--threads", "1")  # fmt: skip
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["aligned_to"] == header["aligned_to"]
    assert summary["distance_after"] == alignment["distance_after"]  # seeded: the same
    assert "aligned to" in again.stderr


def test_align_refuses_in_one_line(tmp_path, mnist1d_teacher, mnist1d_student):
    out = tmp_path / "aligned.safetensors"
    out.write_bytes(b"an old result")
    kept = run("align", mnist1d_student, "--to", mnist1d_teacher, "--out", out)
    assert_one_line_error(kept, "--force")
    assert out.read_bytes() == b"an old result"
    itself = run("align", mnist1d_student, "--to", mnist1d_teacher, "--out", mnist1d_student,
                 "--force")  # fmt: skip
    assert_one_line_error(itself, "is the input STUDENT")
    wide = tmp_path / "wide.safetensors"
    model, meta = train_teacher(load_dataset("mnist1d"), recipe=Recipe(epochs=1), seed=0,
                                arch_overrides={"width": 8})  # fmt: skip
    save_checkpoint(wide, model, meta)
    other = run("align", mnist1d_student, "--to", wide, "--out", tmp_path / "x.safetensors")
    assert_one_line_error(other, "another model arguments")
    foreign = tmp_path / "plain.pt"
    torch.save(model.state_dict(), foreign)
    plain = run("align", foreign, "--to", wide, "--out", tmp_path / "y.safetensors")
    assert_one_line_error(plain, "not a flatscape checkpoint; make one with flatscape import")
    missing = run("align", tmp_path / "no.safetensors", "--to", wide, "--out", tmp_path / "z")
    assert_one_line_error(missing, "not found")


def test_surface_plane_align_moves_the_students_not_their_losses(
    tmp_path, mnist1d_teacher, mnist1d_student
):
    """The aligned plane holds the same models (same losses), nearer the teacher."""
    trio = (mnist1d_teacher, mnist1d_student, mnist1d_student.with_name("gen1b.safetensors"))
    if not trio[2].exists():
        student, meta = load_checkpoint(mnist1d_student)
        with torch.no_grad():
            student.classifier.bias.add_(0.01)  # a third model off the teacher-gen1 line
        save_checkpoint(trio[2], student, meta)
    marks = {}
    for name, extra in (("raw", []), ("aligned", ["--align"])):
        out = tmp_path / f"{name}.h5"
        result = run("surface", "--plane", *trio, *PLANE, *extra, "--out", out)
        assert result.exit_code == 0, result.output
        with SurfaceStore.read(out) as store:
            marks[name] = store.extra("marks")
            attrs = dict(store.attrs)
    assert attrs["alignment"] == "weight_matching"
    (line,) = [line for line in mark_lines(out) if "weight matching" in line]
    assert line.startswith("  aligned to teacher (weight matching): distance gen1 ")
    assert attrs["plane_b_distance_after"] < attrs["plane_b_distance_before"]
    raw, aligned = marks["raw"], marks["aligned"]
    assert aligned["train_loss"] == pytest.approx(raw["train_loss"], rel=1e-5)
    assert aligned["coordinates"][1, 0] < raw["coordinates"][1, 0]  # |B - A| shrank
    lonely = run("surface", mnist1d_teacher, "--align", *PLANE[4:], "--out", tmp_path / "r.h5")
    assert_one_line_error(lonely, "--align aligns the models of --plane A B C")
