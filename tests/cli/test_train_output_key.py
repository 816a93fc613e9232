"""`train --output-key`: a model whose logits are a named entry of a dict output trains on
them, its checkpoint records the key, and every later command (and its students) uses it."""

import json

import numpy as np
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.checkpoint import load_checkpoint
from tests.cli.helpers import assert_one_line_error

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """Its first output entry is not the logits: the default rule would train on it."""

    def __init__(self, input_dim=12, classes=3):
        super().__init__()
        self.body = nn.Linear(input_dim, 8)
        self.out = nn.Linear(8, classes)

    def forward(self, x):
        hidden = torch.tanh(self.body(x.flatten(1)))
        return {"features": hidden, "scores": self.out(hidden)}
'''


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_named_output_is_trained_recorded_and_measured(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    np.savez(tmp_path / "d.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    model_spec = f"{tmp_path / 'net.py'}:Net"
    teacher = tmp_path / "t.safetensors"
    trained = run("train", "--data-file", tmp_path / "d.npz", "--model", model_spec,
                  "--output-key", "scores", "--epochs", 2, "--out", teacher)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    model, meta = load_checkpoint(teacher, named_model=model_spec)
    assert meta["output_key"] == "scores"
    with torch.no_grad():
        assert model(torch.from_numpy(x[:5])).shape == (5, 3)  # the logits, not the features

    reports = {}
    for name, extra in (("recorded", []), ("repeated", ["--output-key", "scores"])):
        reports[name] = tmp_path / f"{name}.json"
        result = run("hessian", teacher, "--model", model_spec, "--samples", 64, "--top-k", 1,
                     "--json", reports[name], "--quiet", *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
    values = [json.loads(p.read_text())["eigenvalues"][0] for p in reports.values()]
    assert values[0] == values[1] and values[0] > 0
    other = run("hessian", teacher, "--model", model_spec, "--output-key", "features",
                "--top-k", 1, "--quiet")  # fmt: skip
    assert_one_line_error(other, "drop --output-key features")

    students = tmp_path / "sd"
    result = run("distill", "--teacher", teacher, "--model", model_spec, "--generations", 1,
                 "--epochs", 1, "--out-dir", students)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        load_checkpoint(students / "gen1.safetensors", named_model=model_spec)[1]["output_key"]
        == "scores"
    )
