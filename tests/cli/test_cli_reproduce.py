"""`flatscape reproduce`: a tiny run end to end, resumed without retraining."""

import copy
import json

import pytest
import torch.nn.functional as F
from click.testing import CliRunner
from scipy import stats

from cli.main import cli
from cli.study.alignment import align_model
from distill.sources import first_examples, open_checkpoint
from landscape.pairs import function_agreement, linear_path


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
    pair_files = sorted(tmp_path.glob("synthetic/seed*/gen*.pair-*.json"))
    assert len(pair_files) == 4
    pair_stamps = {p: p.stat().st_mtime_ns for p in pair_files}
    _assert_pair_measures_equal_direct_calls(document, tmp_path)
    (tmp_path / "synthetic/seed1/gen2.safetensors").unlink()
    second = CliRunner().invoke(cli, [str(a) for a in args])
    assert second.exit_code == 0, second.output
    assert "6 models (1 trained in this run)" in (tmp_path / "report.md").read_text()
    for path, stamp in stamps.items():
        if path.name != "gen2.safetensors" or "seed1" not in str(path):
            assert path.stat().st_mtime_ns == stamp
    # the pair measures are read back from their cache (the retrained gen2's file is
    # rewritten only if training made other bytes)
    for path, stamp in pair_stamps.items():
        if not (path.name.startswith("gen2.") and "seed1" in str(path)):
            assert path.stat().st_mtime_ns == stamp, path
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


def _assert_pair_measures_equal_direct_calls(document, root):
    """Each student's barriers, agreement and KL against its seed's teacher, recomputed."""
    samples = document["experiment"]["samples"]
    for record in (r for r in document["models"] if r["generation"] > 0):
        seed_folder = root / "synthetic" / f"seed{record['seed']}"
        teacher, teacher_meta, bundle = open_checkpoint(seed_folder / "teacher.safetensors")
        student, meta, _ = open_checkpoint(seed_folder / f"{record['name']}.safetensors")
        data = {"train": first_examples(bundle.train_eval, samples, samples),
                "test": first_examples(bundle.test, None, 1024)}  # fmt: skip
        path = linear_path(teacher, student, F.cross_entropy, data)
        assert record["barrier"] == pytest.approx(path.loss_barrier("train"), rel=1e-9, abs=1e-12)
        assert record["barrier_test"] == pytest.approx(path.loss_barrier("test"), rel=1e-9,
                                                       abs=1e-12)  # fmt: skip
        aligned = copy.deepcopy(student)
        aligned.load_state_dict(align_model(student, meta, teacher, teacher_meta).state_dict)
        barrier = linear_path(teacher, aligned, F.cross_entropy, data).loss_barrier("train")
        assert record["aligned_barrier"] == pytest.approx(barrier, rel=1e-9, abs=1e-12)
        agreement = function_agreement(teacher, student, data["train"])
        assert (record["agreement"], record["kl"]) == pytest.approx(
            (agreement.agreement, agreement.kl), rel=1e-9, abs=1e-12
        )
        assert "linear_path" not in record and "aligned_linear_path" not in record
    by_generation = document["datasets"]["synthetic"]["pair_measures"]
    assert [g["generation"] for g in by_generation] == [1, 2]
    gen1 = [r["barrier"] for r in document["models"] if r["generation"] == 1]
    assert by_generation[0]["barrier"]["mean"] == pytest.approx(sum(gen1) / len(gen1))
    report = (root / "report.md").read_text()
    assert "### Teacher and student as a pair" in report
    assert "| generation | seeds | loss barrier | aligned loss barrier | agreement (%) |" in report


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
    barriers = [s["barrier"] for s in students]
    row = next(r for r in rows if r["measure"] == "barrier")
    if len(set(gains)) > 1:  # a pair measure enters the tau table as it is
        assert row["tau"] == pytest.approx(stats.kendalltau(barriers, gains).statistic, abs=1e-12)
    assert {"aligned_barrier", "agreement", "kl"} <= {r["measure"] for r in rows}
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
