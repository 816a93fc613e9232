"""Token data and token losses by flags alone: train, distill, hessian, surface of a tiny LM.

The model casts its (float, until issue 24 §1) inputs back to token ids. The Hessian's
eigenvalues must not depend on how the sequences are batched, and must be those of the
dense float64 Hessian of the mean over counted tokens.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from torch.func import functional_call

from cli.main import cli
from distill.losses import causal_lm_loss
from distill.user_code import import_callable
from tests.references import TINY_LM


def ok(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "lm.py").write_text(textwrap.dedent(TINY_LM))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (40, 6))
    y = x.copy()
    y[::3, 3:] = -100  # every third sequence padded after 3 tokens
    np.savez(tmp_path / "tok.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    model = import_callable("lm.py:TinyLM", "--model").function()
    save_file(model.state_dict(), tmp_path / "lm.safetensors")
    return tmp_path


def _dense(project):
    model = import_callable("lm.py:TinyLM", "--model").function()
    model.load_state_dict(load_file(project / "lm.safetensors"))
    model.double()
    with np.load(project / "tok.npz") as arrays:
        x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        parts = theta.split([s.numel() for s in shapes])
        tensors = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return causal_lm_loss(functional_call(model, tensors, (x,)), y)

    return torch.linalg.eigvalsh(torch.func.hessian(loss)(flat)).flip(0), float(loss(flat))


def test_hessian_of_a_token_loss_is_that_of_the_token_mean_whatever_the_batches(project):
    common = ["hessian", "lm.safetensors", "--model", "lm.py:TinyLM", "--data-file", "tok.npz",
              "--loss", "causal_lm", "--top-k", "2", "--float64", "--tol", "1e-10",
              "--quiet"]  # fmt: skip
    ok(*common, "--json", "one.json")
    ok(*common, "--batch-size", "7", "--json", "seven.json")
    one, seven = (json.loads((project / f).read_text()) for f in ("one.json", "seven.json"))
    dense, dense_loss = _dense(project)
    for report in (one, seven):
        assert report["loss"] == pytest.approx(dense_loss, rel=1e-12)
        np.testing.assert_allclose(report["eigenvalues"], dense[:2], rtol=1e-8)
    assert one["loss_function"]["name"] == "causal_lm"
    ok("surface", "lm.safetensors", "--model", "lm.py:TinyLM", "--data-file", "tok.npz",
       "--loss", "causal_lm", "--x", "-1:1:3", "--quiet", "--out", "s.h5")  # fmt: skip


def test_train_distill_and_measure_a_token_model_by_flags(project):
    model = ["--model", "lm.py:TinyLM"]
    ok("train", "--data-file", "tok.npz", *model, "--loss", "causal_lm", "--epochs", "2",
       "--threads", "1", "--quiet", "--out", "t.safetensors")  # fmt: skip
    ok("distill", "--teacher", "t.safetensors", *model, "--generations", "1", "--epochs", "1",
       "--threads", "1", "--quiet", "--out-dir", "sd")  # fmt: skip
    ok("hessian", "sd/gen1.safetensors", *model, "--loss", "causal_lm", "--top-k", "1",
       "--quiet")  # fmt: skip
    ok("evaluate", "sd/gen1.safetensors", *model, "--json", "e.json")
    evaluated = json.loads((project / "e.json").read_text())["test"]
    assert evaluated["n"] == 38 and 0 <= evaluated["accuracy"] <= 1  # 4 x 2 + 6 x 5 tokens
    ok("compare", "t.safetensors", "sd/gen1.safetensors", *model, "--loss", "causal_lm",
       "--top-k", "1", "--trace-matvecs", "0", "--line-points", "0", "--quiet", "--json",
       "c.json")  # fmt: skip
    rows = json.loads((project / "c.json").read_text())["models"]
    assert all(0 <= row["test_accuracy"] <= 1 for row in rows)
    result = CliRunner().invoke(cli, ["train", "--data-file", "tok.npz", *model, "--epochs", "1",
                                      "--out", "ce.safetensors"])  # fmt: skip
    assert result.exit_code == 2 and "--loss causal_lm or token_ce" in result.stderr
