"""`flatscape sharpness`: numbers equal the library's, matched rows, one-line errors."""

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.sources import load_for_analysis
from landscape.curvature.temperature import TemperatureScaled
from landscape.sharpness import sharpness_report
from tests.cli.helpers import assert_one_line_error

SMALL = ["--samples", "64", "--draws", "2", "--steps", "2", "--restarts", "1", "--threads", "1"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def loaded(mnist1d_teacher, mnist1d_student):
    """The library's view of both checkpoints (64 examples), loaded once for the module."""
    return {
        "teacher": load_for_analysis(mnist1d_teacher, samples=64),
        "student": load_for_analysis(mnist1d_student, samples=64),
    }


def test_report_matches_the_library_and_prints_train_loss(mnist1d_teacher, loaded, tmp_path):
    out = tmp_path / "s.json"
    result = run("sharpness", mnist1d_teacher, "--geometry", "elementwise", "--quiet",
                 "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    teacher = loaded["teacher"]
    expected = {
        m: sharpness_report(
            teacher.model, torch.nn.functional.cross_entropy, teacher.batches, rho, [m],
            ["elementwise"], samples=2, steps=2, restarts=1, seed=0,
        )["results"][0]
        for m, rho in (("average", 0.05), ("worst", 0.1))
    }  # fmt: skip
    rows = report["sharpness"]
    assert [(r["measure"], r["geometry"]) for r in rows] == [
        ("average", "elementwise"),
        ("worst", "elementwise"),
    ]
    for row in rows:
        assert row["values"] == expected[row["measure"]]["values"]
        assert f"{row['loss']:.6f}" in result.output and f"{row['increase']:.6f}" in result.output
    assert report["data"]["samples"] == 64 and report["temperature_matched"] is None
    memory = report["memory"]
    assert memory["budget"] is None or memory["budget"] > memory["graph_bytes"] > 0
    assert memory["peak"] > 0


def test_match_loss_adds_matched_rows(mnist1d_student, loaded, tmp_path):
    out = tmp_path / "m.json"
    result = run("sharpness", mnist1d_student, "--measure", "average", "--geometry", "plain",
                 "--match-loss", 1.9, "--rho", 0.01, "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    matched = report["temperature_matched"]
    assert abs(matched["fit"]["matched_loss"] - 1.9) < 1e-9
    assert abs(matched["sharpness"][0]["loss"] - 1.9) < 1e-4  # measured on the scaled model
    student = loaded["student"]
    scaled = TemperatureScaled(student.model, matched["temperature"])
    expected = sharpness_report(
        scaled, torch.nn.functional.cross_entropy, student.batches, 0.01, ["average"], ["plain"],
        samples=2, seed=0,
    )["results"][0]  # fmt: skip
    assert matched["sharpness"][0]["values"] == expected["values"]
    assert "temperature" in result.output and "matched  average" in result.output


def test_match_teacher_uses_the_teacher_loss(mnist1d_teacher, mnist1d_student):
    result = run("sharpness", mnist1d_teacher, "--match-teacher", mnist1d_teacher,
                 "--measure", "average", "--geometry", "plain", "--quiet", *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "temperature 1.0000" in result.output  # the teacher matched to itself


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rho", "0"], "--rho"),
        (["--rho", "-0.5"], "--rho"),
        (["--measure", "sharpest"], "--measure"),
        (["--geometry", "spectral"], "--geometry"),
        (["--match-loss", "0.1", "--match-teacher", "x.safetensors"], "not both"),
        (["--match-loss", "5.0"], "cannot be reached"),
        (["--max-memory", "3XB"], "memory size '3XB'"),
        (["--max-memory", "1KB"], "one batch of 64 examples holds"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(mnist1d_teacher, args, needle, monkeypatch):
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    assert_one_line_error(run("sharpness", mnist1d_teacher, *args, *SMALL), needle)


@pytest.mark.parametrize("noise", ["1.0", "-0.1", "1.5"])
def test_train_refuses_label_noise_outside_unit_interval(noise, tmp_path):
    result = run("train", "--label-noise", noise, "--out", tmp_path / "t.safetensors")
    assert_one_line_error(result, "--label-noise")


def test_json_is_not_overwritten_without_force(mnist1d_teacher, tmp_path):
    out = tmp_path / "exists.json"
    out.write_text("{}")
    result = run("sharpness", mnist1d_teacher, "--json", out, *SMALL)
    assert_one_line_error(result, "--force")
    assert out.read_text() == "{}"


def test_a_parameter_block_is_perturbed_alone(mnist1d_teacher, loaded, tmp_path):
    out = tmp_path / "b.json"
    result = run("sharpness", mnist1d_teacher, "--params", "classifier.*", "--measure",
                 "average", "--geometry", "plain", "--quiet", "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["parameters"] == 3210 and report["params"]["include"] == ["classifier.*"]
    teacher = loaded["teacher"]
    expected = sharpness_report(
        teacher.model, torch.nn.functional.cross_entropy, teacher.batches, 0.05, ["average"],
        ["plain"], samples=2, seed=0, params=["classifier.weight", "classifier.bias"],
    )["results"][0]  # fmt: skip
    assert report["sharpness"][0]["values"] == expected["values"]
