"""`flatscape reproduce`: a tiny run end to end, resumed without retraining."""

import json

import pytest
from click.testing import CliRunner
from scipy import stats

from cli.main import cli


def test_reproduce_writes_report_and_resumes_without_retraining(tmp_path):
    args = [
        "reproduce",
        "--preset",
        "quick",
        "--dataset",
        "synthetic",
        "--seeds",
        "2",
        "--generations",
        "2",
        "--epochs",
        "2",
        "--out-dir",
        tmp_path,
        "--quiet",
    ]
    first = CliRunner().invoke(cli, [str(a) for a in args])
    assert first.exit_code == 0, first.output
    report = (tmp_path / "report.md").read_text()
    assert "The paper's claims" in report and "student beats teacher" in report
    document = json.loads((tmp_path / "report.json").read_text())
    assert len(document["models"]) == 6
    checkpoints = sorted(tmp_path.glob("synthetic/seed*/*.safetensors"))
    assert len(checkpoints) == 6
    stamps = {p: p.stat().st_mtime_ns for p in checkpoints}
    (tmp_path / "synthetic/seed1/gen2.safetensors").unlink()
    second = CliRunner().invoke(cli, [str(a) for a in args])
    assert second.exit_code == 0, second.output
    assert "6 models (1 trained in this run)" in (tmp_path / "report.md").read_text()
    for path, stamp in stamps.items():
        if path.name != "gen2.safetensors" or "seed1" not in str(path):
            assert path.stat().st_mtime_ns == stamp
    assert (tmp_path / "figures" / "synthetic_lines_seed0.png").is_file()
    # each seed's teacher -> gen1 -> gen2 plane holds the models' own train losses,
    # recomputed for seed 1 whose gen2 was retrained
    document = json.loads((tmp_path / "report.json").read_text())
    planes = document["datasets"]["synthetic"]["planes"]
    assert set(planes) == {"0", "1"}
    for seed, plane in planes.items():
        assert [m["name"] for m in plane["models"]] == ["teacher", "gen1", "gen2"]
        assert (plane["models"][0]["x"], plane["models"][0]["y"]) == (0.0, 0.0)
        for model in plane["models"]:
            (record,) = [r for r in document["models"]
                         if r["seed"] == int(seed) and r["name"] == model["name"]]  # fmt: skip
            assert model["train_loss"] == pytest.approx(record["train_loss"], rel=1e-5)
    assert "The teacher -> gen1 -> gen2 plane" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / "synthetic_seed0_plane.png").is_file()
    _assert_tau_from_stored_values(document)


def _assert_tau_from_stored_values(document):
    """Tau in report.json equals scipy's on the models' stored accuracy and λ1."""
    models = document["models"]
    teachers = {r["seed"]: r for r in models if r["generation"] == 0}
    students = [r for r in models if r["generation"] > 0]
    gains = [s["test_accuracy"] - teachers[s["seed"]]["test_accuracy"] for s in students]
    ratios = [s["lambda_1"] / teachers[s["seed"]]["lambda_1"] for s in students]
    rows = document["datasets"]["synthetic"]["flatness_vs_gain"]["rows"]
    row = next(r for r in rows if r["measure"] == "lambda_1")
    assert row["n"] == 4
    if len(set(gains)) == 1:  # every student as accurate as its teacher: no tau, a reason
        assert row["tau"] is None and "the target is constant" in row["note"]
    else:
        assert row["tau"] == pytest.approx(stats.kendalltau(ratios, gains).statistic, abs=1e-12)
    claims = document["datasets"]["synthetic"]["claims"]
    assert all("t_p_value" in c and "wilcoxon_p_value" in c for c in claims)


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    base = [
        "reproduce",
        "--dataset",
        "synthetic",
        "--seeds",
        "1",
        "--generations",
        "1",
        "--out-dir",
        str(tmp_path),
        "--quiet",
    ]
    assert CliRunner().invoke(cli, base + ["--epochs", "1"]).exit_code == 0
    result = CliRunner().invoke(cli, base + ["--epochs", "2"])
    assert result.exit_code == 2 and "other settings (epochs)" in result.stderr
