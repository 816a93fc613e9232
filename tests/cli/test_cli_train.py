"""`flatscape train/distill/evaluate`: outputs, determinism, and one-line errors (exit 2)."""

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.checkpoint import file_sha256, load_checkpoint
from distill.data import load_dataset
from distill.trainer import evaluate


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.output


def test_train_is_byte_deterministic_and_refuses_overwrite(tmp_path):
    args = ["train", "--dataset", "synthetic", "--epochs", "2", "--seed", "3", "--quiet"]
    first = run(*args, "--out", tmp_path / "a.safetensors")
    assert first.exit_code == 0, first.output
    assert run(*args, "--out", tmp_path / "b.safetensors").exit_code == 0
    assert file_sha256(tmp_path / "a.safetensors") == file_sha256(tmp_path / "b.safetensors")
    log = (tmp_path / "a.log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    before = file_sha256(tmp_path / "a.safetensors")
    assert_one_line_error(run(*args, "--out", tmp_path / "a.safetensors"), "--force")
    assert file_sha256(tmp_path / "a.safetensors") == before


def test_distill_writes_generations_and_table(tmp_path, mnist1d_teacher):
    result = run(
        "distill",
        "--teacher",
        mnist1d_teacher,
        "--generations",
        "2",
        "--epochs",
        "1",
        "--out-dir",
        tmp_path / "sd",
        "--quiet",
        "--json",
        tmp_path / "table.json",
    )
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "table.json").read_text())
    assert [m["name"] for m in table["models"]] == ["teacher", "gen1", "gen2"]
    _, meta = load_checkpoint(tmp_path / "sd" / "gen2.safetensors")
    assert meta["generation"] == 2
    assert f"{table['models'][2]['test_accuracy']:.4f}" in result.output


def test_evaluate_matches_trainer_evaluate(tmp_path, mnist1d_teacher):
    out = tmp_path / "eval.json"
    result = run("evaluate", mnist1d_teacher, "--split", "both", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    model, _ = load_checkpoint(mnist1d_teacher)
    expected = evaluate(model, load_dataset("mnist1d").test)
    assert report["test"]["loss"] == pytest.approx(expected["loss"], rel=1e-12)
    assert report["train"]["n"] == 4000


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"w": _Payload()}, tmp_path / "evil.pt")
    result = run("evaluate", tmp_path / "evil.pt", "--model", "cnn1d", "--dataset", "mnist1d")
    assert_one_line_error(result, "refused")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_truncated_checkpoint(tmp_path, mnist1d_teacher):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(mnist1d_teacher.read_bytes()[:1000])
    assert_one_line_error(run("evaluate", bad), "cut.safetensors")


def test_tampered_checkpoint(tmp_path, mnist1d_teacher):
    data = bytearray(mnist1d_teacher.read_bytes())
    data[-1] ^= 0x01
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    assert_one_line_error(run("evaluate", bad), "SHA-256")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["evaluate", "missing.safetensors"], "not found"),
        (["train", "--dataset", "imagenet", "--out", "x.safetensors"], "imagenet"),
        (["train", "--model", "transformer", "--out", "x.safetensors"], "transformer"),
        (
            ["train", "--dataset", "cifar10", "--data-root", ".", "--out", "x.safetensors"],
            "missing",
        ),
        (["train", "--dataset", "digits", "--model", "cnn1d", "--out", "x.safetensors"], "cnn1d"),
        (["train", "--label-noise", "1.5", "--out", "x.safetensors"], "label-noise"),
        (
            ["distill", "--teacher", "t.safetensors", "--out-dir", "d", "--temperature", "0"],
            "temperature",
        ),
        (["distill", "--teacher", "t.safetensors", "--out-dir", "d", "--alpha", "2"], "alpha"),
        (
            ["distill", "--teacher", "t.safetensors", "--out-dir", "d", "--generations", "-1"],
            "generations",
        ),
        (["distill", "--teacher", "t.safetensors", "--out-dir", "d"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run(*args), needle)
