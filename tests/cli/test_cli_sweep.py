"""`flatscape reproduce --preset sweep`: a 4-recipe, 1-seed, 3-epoch sweep end to end."""

import json
import shutil
from dataclasses import fields, replace

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import cli.study.sweep as sweep_module
from cli.main import cli
from cli.study import (
    SweepGrid,
    check_grid_document,
    matched_curvature,
    measure_checkpoint,
    noise_floor,
)
from cli.study.student_pairs import measure_pair
from cli.study.sweep import teacher_recipe, training_recipe
from distill.checkpoint import load_checkpoint
from distill.errors import DistillInputError
from distill.trainer import student_recipe
from tests.cli.helpers import assert_one_line_error

GRID = {
    "regimes": {"clean": {}},
    "widths": [16],
    "temperatures": [1.0, 4.0],
    "alphas": [1.0],
    "epoch_factors": [1, 2],
    "lr_modes": ["teacher"],
    "seeds": 1,
    "fresh_seeds": 1,
    "teacher_epochs": 3,
    "samples": 128,
    "trace_matvecs": 6,
}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_small_sweep_reports_every_recipe_collapses_included(tmp_path, monkeypatch):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID))
    out = tmp_path / "sweep"
    original = sweep_module.train_student

    def collapsing(teacher, kd, **kwargs):  # T = 4 "diverges": kept as collapsed
        if kd.temperature == 4.0:
            raise DistillInputError("training diverged at epoch 1 (loss nan); lower --lr")
        return original(teacher, kd, **kwargs)

    monkeypatch.setattr(sweep_module, "train_student", collapsing)
    args = ["reproduce", "--preset", "sweep", "--grid", grid, "--out-dir", out, "--quiet",
            "--threads", "1"]  # fmt: skip
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "sweep: 9 models; about" in first.stderr  # the estimate comes first
    document = json.loads((out / "report.json").read_text())
    rows = {row["recipe"]: row for row in document["students"]}
    assert set(rows) == {f"T{t}-a1-e{e}x-lrteacher" for t in (1, 4) for e in (1, 2)}
    for name in ("T4-a1-e1x-lrteacher", "T4-a1-e2x-lrteacher"):
        assert rows[name]["collapsed"] and rows[name]["gain"] is None  # kept, not dropped
    for epochs in (1, 2):
        kept = rows[f"T1-a1-e{epochs}x-lrteacher"]
        gain = kept["student"]["test_accuracy"] - kept["teacher"]["test_accuracy"]
        assert kept["gain"] == pytest.approx(gain)
        assert kept["lambda_1_ratio"] == pytest.approx(
            kept["student"]["lambda_1"] / kept["teacher"]["lambda_1"]
        )
        control = "teacher" if epochs == 1 else "teacher_e2x"  # same epochs, hard labels
        path = out / "clean/w16/seed0" / f"{control}.safetensors"
        measured = measure_checkpoint(path, SweepGrid(**check_grid_document(GRID)), "clean")
        expected = kept["student"]["test_accuracy"] - measured["test_accuracy"]
        assert kept["budget_gain"] == pytest.approx(expected)
        # the pair measures against its teacher: those of measure_pair, read back from its cache
        student = out / "clean/w16/seed0" / f"T1-a1-e{epochs}x-lrteacher.safetensors"
        pair = measure_pair(student, out / "clean/w16/seed0/teacher.safetensors", GRID["samples"])
        for key in ("barrier", "aligned_barrier", "agreement", "kl"):
            assert kept[key] == pair[key], key
        assert kept["barrier"] >= 0 and 0 <= kept["agreement"] <= 1
    _, meta = load_checkpoint(out / "clean/w16/seed0/teacher_e2x.safetensors")
    assert meta["recipe"]["epochs"] == 6 and meta["role"] == "teacher"
    assert document["best"].startswith("T1")  # collapsed recipes count as -1
    assert [r["seed"] for r in document["fresh"]] == [100]
    assert "clean/w16" in document["fresh_summary"]
    report = (out / "report.md").read_text()
    assert "## clean, width 16" in report and "Best recipe on fresh seeds" in report
    assert "| T4-a1-e1x-lrteacher | — | 0/1 | — | 0/1 | 1 |" in report
    assert (out / "gain_vs_lambda_1.png").stat().st_size > 1000
    # two students left: the tau table says why it has no tau instead of failing
    correlation = {r["measure"]: r for r in document["flatness_vs_gain"]["rows"]}
    assert set(correlation) == {"lambda_1", "trace", "matched_lambda_1", "barrier",
                                "aligned_barrier", "agreement", "kl"}  # fmt: skip
    assert all(r["n"] == 2 and "fewer than 3" in r["note"] for r in correlation.values())
    assert "## Does flatness explain the gain?" in report
    assert "— (fewer than 3 complete pairs (n=2))" in report

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing retrained
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**GRID, "teacher_epochs": 4}))
    refused = run("reproduce", "--preset", "sweep", "--grid", other, "--out-dir", out)
    assert refused.exit_code == 2 and "another grid" in refused.stderr


def test_a_retrained_checkpoint_is_measured_and_matched_again(
    tmp_path, mnist1d_teacher, mnist1d_student, monkeypatch
):
    """The cache is keyed by the checkpoint's SHA-256 and the settings, not by its path."""
    grid = SweepGrid(**check_grid_document(GRID))
    calls = {"matched": 0, "profile": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(sweep_module, "matched_lambda_1",
                        counted("matched", sweep_module.matched_lambda_1))  # fmt: skip
    monkeypatch.setattr(sweep_module, "profile_model",
                        counted("profile", sweep_module.profile_model))  # fmt: skip
    path = tmp_path / "teacher.safetensors"
    shutil.copy(mnist1d_teacher, path)
    first = matched_curvature(path, grid, "clean", 2.0)
    before = measure_checkpoint(path, grid, "clean")
    assert matched_curvature(path, grid, "clean", 2.0) == first  # cached: not matched again
    assert measure_checkpoint(path, grid, "clean") == before
    assert calls == {"matched": 1, "profile": 1}
    shutil.copy(mnist1d_student, path)  # the checkpoint is retrained in place
    again = matched_curvature(path, grid, "clean", 2.0)
    after = measure_checkpoint(path, grid, "clean")
    assert calls == {"matched": 2, "profile": 2}
    assert None not in (first, again) and again != first and after != before
    student = tmp_path / "student.safetensors"
    shutil.copy(mnist1d_student, student)
    assert matched_curvature(student, grid, "clean", 2.0) == pytest.approx(again, rel=1e-9)
    assert measure_checkpoint(student, grid, "clean") == pytest.approx(after, rel=1e-9)
    assert matched_curvature(path, grid, "clean", 2.1) != again  # another target: measured
    assert calls["matched"] == 4


def test_bad_grids_are_one_line_errors(tmp_path):
    for text, needle in (
        ('{"widhts": [8]}', "unknown keys"),
        ("[1, 2]", "give a JSON object"),
        ("{not json", "not a readable JSON"),
        ('{"lr_modes": ["half"]}', "lr_modes"),
    ):
        path = tmp_path / "g.json"
        path.write_text(text)
        result = run("reproduce", "--preset", "sweep", "--grid", path, "--out-dir", tmp_path)
        assert result.exit_code == 2 and needle in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    mixed = run("reproduce", "--preset", "quick", "--grid", path, "--out-dir", tmp_path)
    assert mixed.exit_code == 2 and "--preset sweep" in mixed.stderr


def test_the_preset_grid_and_recipes():
    grid = SweepGrid()
    recipes = grid.recipes()
    assert len(recipes) == 24 and len({r["name"] for r in recipes}) == 24
    quarter = training_recipe(grid, {"epochs": 2, "lr": "quarter"})
    same = training_recipe(grid, {"epochs": 1, "lr": "teacher"})
    longer = replace(teacher_recipe(grid), epochs=2 * grid.teacher_epochs)
    assert quarter == student_recipe(longer)  # distill's one default student recipe
    assert quarter.epochs == 2 * grid.teacher_epochs and quarter.lr == pytest.approx(0.025)
    assert same.lr == pytest.approx(0.1) and same.warmup_epochs == 2
    assert noise_floor(0.9, 1000) == pytest.approx(2 * (2 * 0.9 * 0.1 / 1000) ** 0.5)


@pytest.mark.parametrize(
    "document, needle",
    [
        ({"seeds": 1.5}, "seeds 1.5: give a whole number"),
        ({"samples": "all"}, 'samples "all"'),
        ({"teacher_epochs": 1e12}, "teacher_epochs"),
        ({"teacher_epochs": 10**6}, "must lie in [1, 1000]"),
        ({"widths": []}, "non-empty list"),
        ({"widths": [8, 8]}, "each value once"),
        ({"alphas": [True]}, "alphas true"),
        ({"temperatures": [float("inf")]}, "temperatures"),
        ({"regimes": {"../up": {}}}, "names a folder"),
        ({"regimes": {"a": {"label_noise": 2}}}, "regimes.a.label_noise"),
        ({"regimes": {"a": {"root": "/etc"}}}, "options among"),
        ({"lr_modes": [["teacher"]]}, "lr_modes"),
        (None, "JSON object"),
    ],
)
def test_the_grid_schema_names_the_key_and_its_range(document, needle):
    with pytest.raises(DistillInputError) as err:
        check_grid_document(document, "--grid g.json")
    assert needle in str(err.value) and "\n" not in str(err.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from([f.name for f in fields(SweepGrid)] + ["other"])


@settings(max_examples=200, deadline=None)
@given(JSON | st.dictionaries(KEYS, JSON, max_size=4))
def test_any_json_value_is_a_grid_or_an_input_error(document):
    try:
        SweepGrid(**check_grid_document(document))
    except DistillInputError as err:
        assert "\n" not in str(err)


@pytest.mark.parametrize(
    "content",
    [b'{"seeds": 1.5}', b'{"samples": "all"}', b"\xff\xfe{}", b'{"teacher_epochs": 1e12}'],
)
def test_a_bad_grid_file_writes_nothing_and_prints_no_estimate(tmp_path, content, monkeypatch):
    monkeypatch.setattr(sweep_module, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    path = tmp_path / "g.json"
    path.write_bytes(content)
    out = tmp_path / "sweep"
    result = run("reproduce", "--preset", "sweep", "--grid", path, "--out-dir", out)
    assert_one_line_error(result, f"--grid {path}")
    assert result.stdout == "" and not out.exists()
