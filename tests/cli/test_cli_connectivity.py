"""`flatscape compare --connectivity [--curve] --labels`: the pair's numbers, one path."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch.nn.functional as F
from click.testing import CliRunner

from cli.main import cli
from distill.sources import first_examples, open_checkpoint
from landscape.pairs import function_agreement, linear_path
from landscape.surface.plot import load_surface
from tests.cli.helpers import assert_one_line_error

FAST = ["--samples", "256", "--top-k", "1", "--trace-matvecs", "0", "--line-points", "0",
        "--quiet"]  # fmt: skip


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_connectivity_and_curve_reach_json_tables_and_files(tmp_path, mnist1d_teacher,
                                                            mnist1d_student):  # fmt: skip
    out = {k: tmp_path / f"cmp.{k}" for k in ("json", "md", "csv")}
    result = run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--curve",
                 "--curve-steps", "10", "--labels", "teacher,gen1", "--plots", tmp_path / "plots",
                 "--json", out["json"], "--markdown", out["md"], "--csv", out["csv"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out["json"].read_text())
    teacher, gen1 = report["models"]
    assert (teacher["name"], gen1["name"]) == ("teacher", "gen1")
    assert "barrier" not in teacher
    assert gen1["barrier"] >= 0 and gen1["barrier_test"] >= 0
    assert 0 < gen1["agreement"] <= 1 and gen1["kl"] >= 0
    assert list(gen1["cka"]) == ["features.0", "features.2", "features.4", "classifier"]
    assert all(0 <= v <= 1 + 1e-9 for v in gen1["cka"].values())
    assert gen1["line_max_loss"] == max(gen1["linear_path"]["train_loss"])
    curve = load_surface(gen1["curve_file"])
    assert gen1["curve_max_loss"] == pytest.approx(float(curve.values["train_loss"].max()))
    assert (tmp_path / "plots" / "connectivity.png").stat().st_size > 0
    row = list(csv.DictReader(io.StringIO(out["csv"].read_text())))[1]
    for key in ("barrier", "barrier_accuracy", "agreement", "kl", "cka_mean", "curve_max_loss"):
        assert float(row[key]) == gen1[key], key
    header = out["md"].read_text().splitlines()[0]
    assert "| barrier | barrier_accuracy | agreement | kl | cka_mean |" in header
    assert header.endswith("| line_max_loss | curve_max_loss |")
    # the same numbers as the library's own calls on the same examples
    model_t, _, bundle = open_checkpoint(mnist1d_teacher)
    model_s = open_checkpoint(mnist1d_student)[0]
    data = {"train": first_examples(bundle.train_eval, 256, 1024),
            "test": first_examples(bundle.test, None, 1024)}  # fmt: skip
    path = linear_path(model_t, model_s, F.cross_entropy, data)
    assert gen1["barrier"] == pytest.approx(path.loss_barrier(), rel=1e-9, abs=1e-12)
    assert gen1["agreement_test"] == function_agreement(model_t, model_s, data["test"]).agreement


def test_a_checkpoint_paired_with_itself_has_no_barrier_and_agrees(mnist1d_teacher, tmp_path):
    json_path = tmp_path / "self.json"
    result = run("compare", mnist1d_teacher, mnist1d_teacher, *FAST, "--connectivity",
                 "--labels", "a,b", "--json", json_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    b = json.loads(json_path.read_text())["models"][1]
    assert (b["barrier"], b["barrier_accuracy"], b["agreement"], b["kl"]) == (0.0, 0.0, 1.0, 0.0)
    assert all(math.isclose(v, 1.0, rel_tol=1e-9) for v in b["cka"].values())


@pytest.mark.parametrize(
    "labels, needle",
    [("teacher", "--labels names 1 rows for 2 checkpoints"), ("a,a", "names two rows"),
     ("a,b/c", "is no name")],
)  # fmt: skip
def test_bad_labels_are_one_line(mnist1d_teacher, mnist1d_student, labels, needle):
    result = run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--labels", labels)
    assert_one_line_error(result, needle)


def test_an_existing_curve_file_is_refused_before_any_work(mnist1d_teacher, mnist1d_student,
                                                           tmp_path):  # fmt: skip
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "curve-gen1.h5").write_bytes(b"a result")
    result = run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--curve", "--labels",
                 "teacher,gen1", "--plots", plots)  # fmt: skip
    assert_one_line_error(result, "curve-gen1.h5")
    assert (plots / "curve-gen1.h5").read_bytes() == b"a result"


def test_align_adds_the_barrier_of_the_aligned_student(tmp_path, mnist1d_teacher,
                                                       mnist1d_student):  # fmt: skip
    import copy

    from cli.study.alignment import align_model

    json_path = tmp_path / "aligned.json"
    result = run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--align",
                 "--json", json_path, "--markdown", tmp_path / "cmp.md")  # fmt: skip
    assert result.exit_code == 0, result.output
    gen1 = json.loads(json_path.read_text())["models"][1]
    assert gen1["alignment"]["distance_after"] <= gen1["alignment"]["distance_before"]
    assert gen1["aligned_barrier"] >= 0 and "aligned_barrier_test" in gen1
    assert "| aligned_barrier | aligned_barrier_accuracy |" in (tmp_path / "cmp.md").read_text()
    # the same number as aligning and walking the line in Python
    model_t, meta_t, bundle = open_checkpoint(mnist1d_teacher)
    model_s, meta_s, _ = open_checkpoint(mnist1d_student)
    alignment = align_model(model_s, meta_s, model_t, meta_t, seed=0)
    aligned = copy.deepcopy(model_s)
    aligned.load_state_dict(alignment.state_dict)
    data = {"train": first_examples(bundle.train_eval, 256, 1024),
            "test": first_examples(bundle.test, None, 1024)}  # fmt: skip
    path = linear_path(model_t, aligned, F.cross_entropy, data)
    assert gen1["aligned_barrier"] == pytest.approx(path.loss_barrier(), rel=1e-9, abs=1e-12)
    # the unaligned numbers are those of --connectivity alone
    plain = tmp_path / "plain.json"
    assert run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--connectivity",
               "--json", plain).exit_code == 0  # fmt: skip
    assert json.loads(plain.read_text())["models"][1]["barrier"] == gen1["barrier"]


@pytest.mark.parametrize("flag, value", [("--curve-steps", "10"), ("--curve-lr", "0.1")])
def test_curve_settings_without_a_curve_are_one_line(mnist1d_teacher, mnist1d_student, flag,
                                                     value):  # fmt: skip
    result = run("compare", mnist1d_teacher, mnist1d_student, *FAST, "--connectivity", flag,
                 value)  # fmt: skip
    assert_one_line_error(result, "set the --curve; give --curve")
