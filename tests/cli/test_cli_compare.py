"""`flatscape compare`: one computation behind JSON, Markdown and CSV; refusals."""

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from distill.checkpoint import save_checkpoint
from distill.data import load_dataset
from distill.trainer import Recipe, train_teacher
from tests.cli.helpers import assert_one_line_error

FAST = [
    "--samples",
    "256",
    "--top-k",
    "2",
    "--trace-matvecs",
    "12",
    "--line-points",
    "9",
    "--quiet",
]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_json_markdown_csv_agree(tmp_path, mnist1d_teacher, mnist1d_student):
    out = {k: tmp_path / f"cmp.{k}" for k in ("json", "md", "csv")}
    result = run(
        "compare",
        mnist1d_teacher,
        mnist1d_student,
        *FAST,
        "--json",
        out["json"],
        "--markdown",
        out["md"],
        "--csv",
        out["csv"],
        "--confounds",
        "--surface",
        "--plots",
        tmp_path / "plots",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out["json"].read_text())
    rows = list(csv.DictReader(io.StringIO(out["csv"].read_text())))
    markdown = out["md"].read_text()
    assert report["reference"] == "teacher"
    assert [m["name"] for m in report["models"]] == [r["name"] for r in rows]
    for model, row in zip(report["models"], rows, strict=True):
        for key in ("test_accuracy", "train_loss", "lambda_1", "trace", "surface_width",
                    "ggn_lambda_1", "worst_sharpness", "matched_lambda_1"):  # fmt: skip
            assert float(row[key]) == model[key]
        assert f"{model['test_accuracy']:.4f}" in markdown
        assert f"{model['lambda_1']:.4g}" in markdown
    teacher, student = report["models"]
    assert teacher["lambda_1_change"] == 0.0
    assert student["lambda_1_change"] == pytest.approx(
        (student["lambda_1"] - teacher["lambda_1"]) / teacher["lambda_1"]
    )
    assert markdown in result.output
    assert (tmp_path / "plots" / "lines.png").is_file()
    assert (tmp_path / "plots" / "interpolation.png").is_file()
    assert len(student["interpolation"]["x"]) == 41
    # Temperature matching brings every model to the highest train loss among them.
    highest = max(m["train_loss"] for m in report["models"])
    assert all(m["matched_target"] == highest for m in report["models"])
    assert all(m["matched_temperature"] > 0 for m in report["models"])


def test_mixed_architectures_are_refused(tmp_path, mnist1d_teacher):
    model, meta = train_teacher(load_dataset("mnist1d"), arch="mlp", recipe=Recipe(epochs=1))
    other = save_checkpoint(tmp_path / "mlp.safetensors", model, meta)
    result = run("compare", mnist1d_teacher, other, *FAST)
    assert result.exit_code == 2
    assert "--allow-mixed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert run("compare", mnist1d_teacher, other, *FAST, "--allow-mixed").exit_code == 0


def test_missing_checkpoint_is_named(tmp_path, mnist1d_teacher):
    missing = tmp_path / "gen7.safetensors"
    result = run("compare", mnist1d_teacher, missing, *FAST)
    assert result.exit_code == 2
    assert "checkpoint 2 of 2" in result.stderr and "gen7.safetensors" in result.stderr


def test_per_layer_and_resampled_spread(mnist1d_teacher, mnist1d_student, tmp_path):
    from landscape.curvature.resampling import exceeds_spread

    out, plots, table = tmp_path / "c.json", tmp_path / "plots", tmp_path / "layers.csv"
    result = CliRunner().invoke(cli, [str(a) for a in (
        "compare", mnist1d_teacher, mnist1d_student, "--samples", 128, "--top-k", 1,
        "--trace-matvecs", 6, "--line-points", 0, "--per-layer", "--resamples", 3,
        "--resample-size", 200, "--plots", plots, "--json", out, "--per-layer-table", table,
        "--threads", 1, "--quiet",
    )])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    teacher, student = report["models"]
    assert report["parameters"] == teacher["parameters"] == 9610
    assert report["loss_function"]["name"] == "cross_entropy" and report["loss"] == "cross_entropy"
    for model in (teacher, student):
        assert [r["module"] for r in model["per_layer"]] == [
            "features.0", "features.2", "features.4", "classifier"]  # fmt: skip
        values = model["resampling"]["eigenvalues"][0]["values"]
        assert len(values) == 3 and model["lambda_1_sd"] == pytest.approx(np.std(values, ddof=1))
        traces = model["resampling"]["trace"]["values"]
        assert model["trace_sd"] == pytest.approx(np.std(traces, ddof=1))
    assert teacher["lambda_1_change_exceeds_spread"] is None
    for key, at in (("lambda_1", ("eigenvalues", 0)), ("trace", ("trace",))):
        a, b = student["resampling"], teacher["resampling"]
        for step in at:
            a, b = a[step], b[step]
        assert student[f"{key}_change_exceeds_spread"] == exceeds_spread(a, b)
    assert (plots / "per_layer.png").stat().st_size > 1000
    assert "lambda_1_change_exceeds_spread" in result.output
    lines = table.read_text().splitlines()
    assert lines[0].startswith("model,module,size,lambda_1,trace") and len(lines) == 1 + 2 * 4
    assert lines[1].startswith(f"{teacher['name']},features.0,")


def test_per_layer_measures_the_whole_model_once(mnist1d_teacher, tmp_path, monkeypatch):
    """``hvps`` (the whole model) is the same with --per-layer; the blocks add their own."""
    from landscape.operators.hessian import HessianOperator

    products: list[int] = []
    matmat = HessianOperator.matmat

    def counted(self, V):
        products.append(V.shape[1])
        return matmat(self, V)

    monkeypatch.setattr(HessianOperator, "matmat", counted)
    args = ("compare", mnist1d_teacher, mnist1d_teacher, "--samples", 128, "--top-k", 1,
            "--trace-matvecs", 6, "--line-points", 0, "--threads", 1, "--quiet")  # fmt: skip
    assert run(*args, "--json", tmp_path / "whole.json").exit_code == 0
    whole, spent = json.loads((tmp_path / "whole.json").read_text())["models"], sum(products)
    result = run(*args, "--per-layer", "--json", tmp_path / "layers.json")
    assert result.exit_code == 0, result.output
    layered = json.loads((tmp_path / "layers.json").read_text())["models"]
    assert spent == sum(m["hvps"] for m in whole)
    assert [m["hvps"] for m in layered] == [m["hvps"] for m in whole]
    assert [m["lambda_1"] for m in layered] == [m["lambda_1"] for m in whole]
    blocks = [m["per_layer_hvps"] for m in layered]
    assert all(n > 0 for n in blocks)
    assert sum(products) - spent == sum(m["hvps"] for m in whole) + sum(blocks)


def test_bootstrap_subsets_and_impossible_resamples(mnist1d_teacher, mnist1d_student, tmp_path):
    out = tmp_path / "b.json"
    common = ["compare", mnist1d_teacher, mnist1d_student, "--samples", 64, "--top-k", 1,
              "--trace-matvecs", 0, "--line-points", 0, "--threads", 1, "--quiet"]  # fmt: skip
    result = CliRunner().invoke(
        cli,
        [
            str(a)
            for a in (
                *common,
                "--resamples",
                2,
                "--resample-size",
                100,
                "--bootstrap",
                "--json",
                out,
            )
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["models"][0]["resampling"]["bootstrap"] is True
    too_many = CliRunner().invoke(cli, [str(a) for a in (
        *common, "--resamples", 9, "--resample-size", 500)])  # fmt: skip
    assert_one_line_error(too_many, "or pass --bootstrap")
    alone = CliRunner().invoke(cli, [str(a) for a in (*common, "--bootstrap")])
    assert_one_line_error(alone, "give --resamples")


def test_the_plane_of_three_models_in_the_comparison(tmp_path, mnist1d_teacher, mnist1d_student):
    from distill.losses import KDConfig
    from distill.trainer import train_student

    gen2 = tmp_path / "gen2.safetensors"
    model, meta = train_student(mnist1d_student, KDConfig(4.0, 1.0), recipe=Recipe(epochs=1))
    save_checkpoint(gen2, model, meta)
    out, plots = tmp_path / "c.json", tmp_path / "plots"
    result = run("compare", mnist1d_teacher, mnist1d_student, gen2, *FAST, "--plane",
                 "--plane-points", "5", "--plots", plots, "--json", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "The plane through teacher -> gen1 -> gen2" in result.output
    report = json.loads(out.read_text())
    plane = report["plane"]
    assert [m["name"] for m in plane["models"]] == ["teacher", "gen1", "gen2"]
    for position, model in zip(plane["models"], report["models"], strict=True):
        assert position["train_loss"] == pytest.approx(model["train_loss"], rel=1e-5)
    assert plane["models"][1]["y"] == 0.0 and plane["models"][2]["y"] > 0
    assert (plots / "plane.png").stat().st_size > 1000 and (plots / "plane.h5").is_file()
    assert "aligned" not in plane
    aligned_out = tmp_path / "aligned.json"
    result = run("compare", mnist1d_teacher, mnist1d_student, gen2, *FAST, "--plane", "--align",
                 "--plane-points", "5", "--json", aligned_out)  # fmt: skip
    assert result.exit_code == 0, result.output
    aligned = json.loads(aligned_out.read_text())
    assert aligned["plane"]["aligned"] == "weight_matching"
    for position, model in zip(aligned["plane"]["models"], report["models"], strict=True):
        assert position["train_loss"] == pytest.approx(model["train_loss"], rel=1e-5)
    # gen1 lies on the x axis at its distance from the teacher: alignment brings it nearer
    assert aligned["plane"]["models"][1]["x"] <= plane["models"][1]["x"]
    assert aligned["plane"]["models"][1]["x"] == pytest.approx(
        aligned["models"][1]["alignment"]["distance_after"], rel=1e-4
    )
    two = run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--plane")
    assert two.exit_code == 2 and "three checkpoints" in two.stderr
