"""``--model hf:DIR`` by flags alone: a GPT-2 and a BERT saved with ``save_pretrained``.

train, distill, hessian, surface and compare on token data in ``.npz``; the CLI's lambda_1
against scipy ``eigsh`` on float64 Hessian-vector products of the same model with eager
attention and Hugging Face's own loss (:mod:`tests.hf_problems`).
"""

from __future__ import annotations

import hashlib
import json
import sys

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from cli.main import cli
from tests.cli.helpers import assert_one_line_error
from tests.hf_problems import (
    bert_folder,
    bert_npz,
    eager_float64,
    eigsh_top_eigenvalues,
    gpt2_folder,
    gpt2_npz,
)

SAMPLES = 16


def _run(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output + str(result.exception)
    return result


def _recorded(path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["flatscape"])


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A GPT-2 folder, its token data, a teacher trained on it and a distilled student."""
    root = tmp_path_factory.mktemp("gpt2")
    folder, data = gpt2_folder(root / "gpt2"), gpt2_npz(root / "tokens.npz")
    model = f"hf:{folder}"
    teacher = root / "teacher.safetensors"
    _run("train", "--model", model, "--data-file", data, "--loss", "causal_lm", "--epochs", 1,
         "--out", teacher, "--quiet")  # fmt: skip
    _run("distill", "--teacher", teacher, "--model", model, "--generations", 1, "--epochs", 1,
         "--out-dir", root / "sd", "--quiet")  # fmt: skip
    ids = torch.from_numpy(np.load(data)["x_train"][:SAMPLES])
    reference = eigsh_top_eigenvalues(
        eager_float64(folder, load_file(str(teacher))), {"input_ids": ids, "labels": ids}, k=2
    )
    return {"folder": folder, "data": data, "model": model, "teacher": teacher,
            "student": root / "sd" / "gen1.safetensors", "reference": reference}  # fmt: skip


def test_gpt2_checkpoint_records_config_and_its_sha(gpt2):
    meta = _recorded(gpt2["teacher"])
    source = meta["model_source"]
    config = json.loads((gpt2["folder"] / "config.json").read_text())
    assert meta["arch"] == gpt2["model"] and meta["loss"] == "causal_lm"
    assert source["config"] == config and source["config"]["architectures"] == ["GPT2LMHeadModel"]
    assert source["source_sha256"] == hashlib.sha256(
        (gpt2["folder"] / "config.json").read_bytes()).hexdigest()  # fmt: skip
    student = _recorded(gpt2["student"])
    assert student["role"] == "student" and student["model_source"] == source


def test_gpt2_hessian_lambda1_matches_float64_eigsh(gpt2, tmp_path):
    report = tmp_path / "h.json"
    _run("hessian", gpt2["teacher"], "--model", gpt2["model"], "--top-k", 2,
         "--samples", SAMPLES, "--json", report, "--quiet")  # fmt: skip
    measured, reference = json.loads(report.read_text())["eigenvalues"], gpt2["reference"]
    assert abs(measured[0] - reference[0]) <= 1e-3 * abs(reference[0]), (measured, reference)
    assert measured[0] >= measured[1]


def test_gpt2_surface_and_compare_by_flags_alone(gpt2, tmp_path):
    surface = tmp_path / "s.h5"
    _run("surface", gpt2["teacher"], "--model", gpt2["model"], "--x", "-0.5:0.5:3",
         "--samples", SAMPLES, "--out", surface, "--quiet")  # fmt: skip
    with h5py.File(surface) as handle:
        losses = handle["train_loss"][()]
    assert losses.shape == (3,) and np.isfinite(losses).all()
    table = tmp_path / "c.json"
    _run("compare", gpt2["teacher"], gpt2["student"], "--model", gpt2["model"],
         "--samples", SAMPLES, "--top-k", 1, "--json", table, "--quiet")  # fmt: skip
    models = json.loads(table.read_text())["models"]
    assert [(m["name"], m["role"]) for m in models] == [("teacher", "teacher"), ("gen1", "student")]
    reference = gpt2["reference"][0]  # compare measures at its default --tol 1e-3
    assert abs(models[0]["lambda_1"] - reference) <= 1e-2 * reference, (models[0], reference)
    assert np.isfinite(models[1]["lambda_1"]) and models[1]["lambda_1"] > 0


def test_gpt2_checkpoint_refuses_another_config(gpt2, tmp_path):
    other = gpt2_folder(tmp_path / "other", n_embd=32)
    result = CliRunner().invoke(cli, ["hessian", str(gpt2["teacher"]), "--model",
                                      f"hf:{other}", "--top-k", "1"])  # fmt: skip
    assert_one_line_error(result, "config.json is not the one")
    unnamed = CliRunner().invoke(cli, ["hessian", str(gpt2["teacher"]), "--top-k", "1"])
    assert_one_line_error(unnamed, f"pass --model {gpt2['model']}")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A BERT folder, padded token data with attention masks, and a trained classifier."""
    root = tmp_path_factory.mktemp("bert")
    folder, data = bert_folder(root / "bert"), bert_npz(root / "padded.npz")
    teacher = root / "teacher.safetensors"
    model = f"hf:{folder}"
    _run("train", "--model", model, "--data-file", data, "--epochs", 1, "--out", teacher,
         "--quiet")  # fmt: skip
    _run("distill", "--teacher", teacher, "--model", model, "--generations", 1, "--epochs", 1,
         "--out-dir", root / "sd", "--quiet")  # fmt: skip
    return {"folder": folder, "data": data, "model": model, "teacher": teacher,
            "student": root / "sd" / "gen1.safetensors"}  # fmt: skip


def test_bert_with_masks_hessian_surface_compare(bert, tmp_path):
    report = tmp_path / "h.json"
    _run("hessian", bert["teacher"], "--model", bert["model"], "--top-k", 2,
         "--samples", SAMPLES, "--json", report, "--quiet")  # fmt: skip
    measured = json.loads(report.read_text())["eigenvalues"]
    arrays = np.load(bert["data"])
    inputs = {"input_ids": torch.from_numpy(arrays["x_train"][:SAMPLES]),
              "attention_mask": torch.from_numpy(arrays["x_train__attention_mask"][:SAMPLES]),
              "labels": torch.from_numpy(arrays["y_train"][:SAMPLES])}  # fmt: skip
    model = eager_float64(bert["folder"], load_file(str(bert["teacher"])))
    reference = eigsh_top_eigenvalues(model, inputs, k=2)
    assert abs(measured[0] - reference[0]) <= 1e-3 * abs(reference[0]), (measured, reference)
    _run("surface", bert["teacher"], "--model", bert["model"], "--x", "-0.5:0.5:3",
         "--samples", SAMPLES, "--out", tmp_path / "s.h5", "--quiet")  # fmt: skip
    with h5py.File(tmp_path / "s.h5") as handle:
        assert np.isfinite(handle["train_loss"][()]).all()
        accuracy = handle["train_acc"][()]  # percent, as loss-landscape writes it
        assert ((accuracy >= 0) & (accuracy <= 100)).all() and accuracy.max() > 0
    _run("compare", bert["teacher"], bert["student"], "--model", bert["model"],
         "--samples", SAMPLES, "--top-k", 1, "--json", tmp_path / "c.json", "--quiet")  # fmt: skip
    models = json.loads((tmp_path / "c.json").read_text())["models"]
    assert abs(models[0]["lambda_1"] - reference[0]) <= 1e-2 * reference[0]
    assert models[1]["role"] == "student" and np.isfinite(models[1]["lambda_1"])


def test_hf_model_kwargs_refused(gpt2, tmp_path):
    result = CliRunner().invoke(cli, [
        "train", "--model", gpt2["model"], "--model-kwargs", '{"n_layer": 3}', "--data-file",
        str(gpt2["data"]), "--loss", "causal_lm", "--out", str(tmp_path / "t.safetensors"),
    ])  # fmt: skip
    assert_one_line_error(result, "takes no --model-kwargs")


def test_without_transformers_one_line_saying_how_to_install(gpt2, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    result = CliRunner().invoke(cli, [
        "train", "--model", gpt2["model"], "--data-file", str(gpt2["data"]), "--loss",
        "causal_lm", "--out", str(tmp_path / "t.safetensors"),
    ])  # fmt: skip
    assert_one_line_error(result, "pip install 'flatscape[hf]'")


def test_gpt2_loss_model_is_hf_own_loss(gpt2, tmp_path):
    """--loss model (GPT-2's labels= loss) gives the reference, which is that loss."""
    report = tmp_path / "h.json"
    _run("hessian", gpt2["teacher"], "--model", gpt2["model"], "--loss", "model", "--top-k", 1,
         "--samples", SAMPLES, "--json", report, "--quiet")  # fmt: skip
    document = json.loads(report.read_text())
    reference = gpt2["reference"][0]
    assert document["loss_function"]["name"] == "model"
    assert abs(document["eigenvalues"][0] - reference) <= 1e-3 * reference


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["hessian", "--operator", "ggn"], "--loss model: --operator ggn needs"),
        (["hessian", "--engine", "pyhessian"], "--loss model: --engine pyhessian needs"),
        (["surface", "--x", "-1:1:3", "--out", "s.h5"], "--loss model: this command needs"),
        (["sharpness"], "--loss model: this command needs"),
    ],
)
def test_loss_model_refused_where_outputs_are_needed(gpt2, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [args[0], str(gpt2["teacher"]), "--model", gpt2["model"],
                                      "--loss", "model", *args[1:]])  # fmt: skip
    assert_one_line_error(result, needle)


def test_bert_folder_weights_import_as_a_checkpoint(bert, tmp_path):
    """The folder's own weights, imported: the checkpoint records the config, evaluates."""
    out = tmp_path / "imported.safetensors"
    _run("import", bert["folder"] / "model.safetensors", "--model", bert["model"],
         "--data-file", bert["data"], "--out", out)  # fmt: skip
    meta = _recorded(out)
    assert meta["arch"] == bert["model"]
    assert meta["model_source"]["config"]["architectures"] == ["BertForSequenceClassification"]
    evaluated = _run("evaluate", out, "--model", bert["model"], "--json", tmp_path / "e.json")
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["test"]["accuracy"] == pytest.approx(meta["metrics"]["test_accuracy"]), evaluated
