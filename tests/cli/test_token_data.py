"""Token data by flags alone: integer ids and masks in an .npz, a model file that imports
its neighbour, a dict output, ``--output-key``; references from a dense float64 Hessian."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from cli.main import cli
from distill.user_code import import_callable
from tests.cli.helpers import assert_one_line_error

BLOCK = """
import torch
from torch import nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, explicit=False):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.explicit = explicit

    def forward(self, h, mask):
        q, k, v = (t[:, None] for t in self.qkv(h).chunk(3, dim=-1))
        keys = mask[:, None, None, :].bool()
        if self.explicit:
            scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
            return (torch.softmax(scores.masked_fill(~keys, float("-inf")), -1) @ v)[:, 0]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys)[:, 0]
"""

NET = """
from collections import OrderedDict

import torch
from torch import nn

from tokenblock import Attention


class TokenNet(nn.Module):
    def __init__(self, vocab=11, dim=4, classes=3, explicit=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attention = Attention(dim, explicit)
        self.head = nn.Linear(dim, classes)

    def pooled(self, input_ids, attention_mask):
        if input_ids.is_floating_point():
            raise TypeError("token ids must be integers")
        a = self.attention(self.embed(input_ids), attention_mask)
        w = attention_mask[..., None].to(a.dtype)
        return torch.tanh((a * w).sum(1) / w.sum(1))

    def forward(self, input_ids, attention_mask):
        return OrderedDict(logits=self.head(self.pooled(input_ids, attention_mask)))


class Keyed(TokenNet):
    def forward(self, input_ids, attention_mask):
        pooled = self.pooled(input_ids, attention_mask)
        return {"norm": pooled.norm(dim=1), "scores": self.head(pooled)}
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def project(tmp_path, monkeypatch):
    """tokennet.py (importing tokenblock.py beside it) and tokens.npz: int64 ids and masks."""
    (tmp_path / "tokenblock.py").write_text(textwrap.dedent(BLOCK))
    (tmp_path / "tokennet.py").write_text(textwrap.dedent(NET))
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("test", 32)):
        real = rng.integers(2, 7, n)
        mask = (np.arange(6)[None, :] < real[:, None]).astype(np.int64)
        arrays[f"x_{split}"] = rng.integers(1, 11, (n, 6)) * mask
        arrays[f"x_{split}__attention_mask"] = mask
        arrays[f"y_{split}"] = rng.integers(0, 3, n)
    np.savez(tmp_path / "tokens.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


def _net(project, name="TokenNet", **kwargs):
    return import_callable(str(project / f"tokennet.py:{name}"), "--model").function(**kwargs)


def _dense(project, weights):
    """lambda_1 and the loss of the explicit-attention twin in float64, from scratch."""
    net = _net(project, explicit=True)
    net.load_state_dict(weights)
    net = net.double()
    with np.load(project / "tokens.npz") as arrays:
        ids = torch.tensor(arrays["x_train"])
        mask = torch.tensor(arrays["x_train__attention_mask"])
        y = torch.tensor(arrays["y_train"])
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(theta):
        parts = theta.split([s.numel() for s in shapes])
        tensors = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        out = torch.func.functional_call(net, tensors, (ids, mask))
        return F.cross_entropy(out["logits"], y)

    return float(torch.linalg.eigvalsh(torch.func.hessian(loss)(flat))[-1]), float(loss(flat))


def test_npz_tokens_train_hessian_evaluate_surface_plot(project):
    model = ["--model", "tokennet.py:TokenNet"]
    ok("train", "--data-file", "tokens.npz", *model, "--epochs", "2", "--threads", "1",
       "--quiet", "--out", "t.safetensors")  # fmt: skip
    ok("hessian", "t.safetensors", *model, "--top-k", "1", "--float64", "--tol", "1e-10",
       "--quiet", "--json", "h.json")  # fmt: skip
    report = json.loads((project / "h.json").read_text())
    lambda_1, loss = _dense(project, load_file(project / "t.safetensors"))
    assert report["loss"] == pytest.approx(loss, rel=1e-9)
    assert report["eigenvalues"][0] == pytest.approx(lambda_1, rel=1e-6)
    assert report["attention"].startswith("math kernel")
    ok("evaluate", "t.safetensors", *model, "--split", "both", "--json", "e.json")
    evaluated = json.loads((project / "e.json").read_text())
    assert evaluated["train"]["loss"] == pytest.approx(loss, rel=1e-5)
    ok("surface", "t.safetensors", *model, "--x", "-1:1:3", "--samples", "32", "--quiet",
       "--out", "line.h5")  # fmt: skip
    ok("plot", "line.h5", "--out", "line.png")  # a 1D file draws its line without --kind
    assert (project / "line.png").stat().st_size > 1000


def test_output_key_names_the_logits_of_a_dict_output(project):
    torch.manual_seed(0)
    save_file(_net(project, "Keyed").state_dict(), project / "k.safetensors")
    flags = ["k.safetensors", "--model", "tokennet.py:Keyed", "--data-file", "tokens.npz"]
    assert_one_line_error(run("hessian", *flags, "--quiet"), "--loss cross_entropy")
    ok("hessian", *flags, "--output-key", "scores", "--top-k", "1", "--float64",
       "--tol", "1e-10", "--quiet", "--json", "h.json")  # fmt: skip
    report = json.loads((project / "h.json").read_text())
    lambda_1, loss = _dense(project, load_file(project / "k.safetensors"))
    assert report["eigenvalues"][0] == pytest.approx(lambda_1, rel=1e-6)
    assert_one_line_error(run("hessian", *flags, "--output-key", "nothing", "--quiet"),
                          "'nothing'")  # fmt: skip
