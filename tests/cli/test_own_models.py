"""The user's own network, data, loss and checkpoints, by command-line flags alone.

Every test writes its own user package into a temporary folder (a model file that is not
in ``distill.models``: LayerNorm and a residual block; a data file; a loss file) and runs
the commands from there, as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from torch.nn import functional as F

from cli.main import cli
from distill.checkpoint import load_checkpoint
from distill.user_code import import_callable

MODEL_FILE = """
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.fc(self.norm(x)))


class Net(nn.Module):
    def __init__(self, inputs=6, width=8, classes=3):
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.block = Residual(width)
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        return self.out(self.block(torch.tanh(self.inp(x))))


def raises(**kwargs):
    raise RuntimeError("no GPU here")


def not_a_module(**kwargs):
    return 42
"""

DATA_FILE = """
import numpy as np
import torch
from torch.utils.data import TensorDataset


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6)) + 2.0 * np.eye(3, 6)[y]
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    return data, data


def blobs_dict(n=60):
    train, test = blobs(n)
    return {"train": train, "test": test}


def wrong_labels():
    x = torch.zeros(10, 6)
    return (x, torch.zeros(10, 2, dtype=torch.int64)), (x, torch.zeros(10, dtype=torch.int64))
"""

LOSS_FILE = """
import torch.nn.functional as F


def smoothed(outputs, targets):
    return F.cross_entropy(outputs, targets, label_smoothing=0.1)


def per_example(outputs, targets):
    return F.cross_entropy(outputs, targets, reduction="none")
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's folder: mynet.py, mydata.py, myloss.py and data.npz; the working directory."""
    (tmp_path / "mynet.py").write_text(textwrap.dedent(MODEL_FILE))
    (tmp_path / "mydata.py").write_text(textwrap.dedent(DATA_FILE))
    (tmp_path / "myloss.py").write_text(textwrap.dedent(LOSS_FILE))
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 240), ("test", 90)):
        y = rng.integers(0, 3, n)
        arrays[f"x_{split}"] = (rng.normal(size=(n, 6)) + 2.0 * np.eye(3, 6)[y]).astype(np.float32)
        arrays[f"y_{split}"] = y
    np.savez(tmp_path / "data.npz", **arrays, classes=np.array(["a", "b", "c"]))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path


@pytest.fixture
def teacher(project):
    """A teacher of mynet.py:Net on data.npz, trained by flags alone (3 epochs)."""
    ok("train", "--data-file", "data.npz", "--model", "mynet.py:Net", "--model-kwargs",
       '{"width": 8}', "--epochs", "3", "--threads", "1", "--quiet",
       "--out", "t.safetensors")  # fmt: skip
    return project / "t.safetensors"


def _dense_eigenvalues(project: Path, samples: int) -> np.ndarray:
    """The float64 Hessian of the mean cross-entropy of the teacher, from scratch.

    ``jacfwd(grad)``: ``torch.func.hessian`` is wrong for LayerNorm in torch 2.13.
    """
    net = import_callable(str(project / "mynet.py") + ":Net", "--model").function(width=8)
    from safetensors.torch import load_file

    net.load_state_dict(load_file(project / "t.safetensors"))
    net = net.double().eval()
    with np.load(project / "data.npz") as arrays:
        x = torch.tensor(arrays["x_train"][:samples], dtype=torch.float64)
        y = torch.tensor(arrays["y_train"][:samples])
    names = [n for n, _ in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    shapes = [p.shape for p in net.parameters()]

    def loss(theta):
        parts, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            parts[name] = theta[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return F.cross_entropy(torch.func.functional_call(net, parts, (x,)), y)

    dense = torch.func.jacfwd(torch.func.grad(loss))(flat)
    return torch.linalg.eigvalsh(dense).flip(0).numpy(), float(loss(flat))


def test_train_distill_evaluate_hessian_surface_plot_compare_by_flags(teacher, project):
    model = ["--model", "mynet.py:Net"]
    ok("distill", "--teacher", teacher, "--generations", "2", "--epochs", "2", *model,
       "--threads", "1", "--quiet", "--out-dir", "sd")  # fmt: skip
    evaluated = ok("evaluate", teacher, *model, "--split", "both", "--json", "e.json")
    report = json.loads((project / "e.json").read_text())
    assert report["train"]["n"] == 240 and report["test"]["n"] == 90
    assert "accuracy" in evaluated.output
    ok("hessian", teacher, *model, "--top-k", "3", "--trace", "--samples", "200", "--float64",
       "--tol", "1e-9", "--quiet", "--json", "h.json")  # fmt: skip
    hessian = json.loads((project / "h.json").read_text())
    dense = _dense_eigenvalues(project, 200)
    dense, dense_loss = dense
    assert hessian["loss"] == pytest.approx(dense_loss, rel=1e-9)
    np.testing.assert_allclose(hessian["eigenvalues"], dense[:3], rtol=1e-6, atol=1e-9)
    assert hessian["loss_function"]["name"] == "cross_entropy"
    ok("surface", teacher, *model, "--x", "-1:1:5", "--y", "-1:1:3", "--samples", "100",
       "--quiet", "--out", "s.h5")  # fmt: skip
    ok("plot", "s.h5", "--out", "s.png")
    ok("sharpness", teacher, *model, "--samples", "100", "--draws", "2", "--steps", "2",
       "--restarts", "1", "--quiet", "--json", "sh.json")  # fmt: skip
    sharpness = json.loads((project / "sh.json").read_text())
    assert sharpness["settings"]["loss"] == "cross_entropy" and len(sharpness["sharpness"]) == 6
    assert (project / "s.png").stat().st_size > 1000
    compared = ok("compare", teacher, "sd/gen1.safetensors", "sd/gen2.safetensors", *model,
                  "--samples", "100", "--top-k", "1", "--trace-matvecs", "0", "--line-points",
                  "0", "--quiet", "--json", "c.json")  # fmt: skip
    rows = json.loads((project / "c.json").read_text())["models"]
    assert [r["name"] for r in rows] == ["t", "gen1", "gen2"] and "gen2" in compared.output
    meta = load_checkpoint("sd/gen2.safetensors", named_model="mynet.py:Net")[1]
    assert meta["arch"] == "mynet.py:Net" and meta["generation"] == 2
    assert meta["model_source"]["source_sha256"] == import_callable(
        "mynet.py:Net", "--model").source_sha256  # fmt: skip
    assert meta["dataset"]["name"] == "npz" and meta["dataset"]["class_names"] == ["a", "b", "c"]


def test_a_user_model_checkpoint_needs_its_model_named_again(teacher):
    for command in (["evaluate", teacher], ["hessian", teacher, "--quiet"],
                    ["distill", "--teacher", teacher, "--out-dir", "x"]):  # fmt: skip
        assert_one_line_error(run(*command), "pass --model mynet.py:Net to import it")
    assert not Path("x").exists()
    assert_one_line_error(run("evaluate", teacher, "--model", "mydata.py:blobs"),
                          "made with mynet.py:Net, not mydata.py:blobs")  # fmt: skip
    moved = Path("elsewhere")
    moved.mkdir()
    (moved / "net_copy.py").write_text(Path("mynet.py").read_text())
    ok("evaluate", teacher, "--model", "elsewhere/net_copy.py:Net")  # the same code, moved


def test_data_and_loss_from_user_code(project):
    ok("train", "--data", "mydata.py:blobs", "--data-kwargs", '{"n": 90}', "--model",
       "mynet.py:Net", "--epochs", "2", "--quiet", "--out", "d.safetensors")  # fmt: skip
    assert_one_line_error(run("evaluate", "d.safetensors", "--model", "mynet.py:Net"),
                          "pass --data mydata.py:blobs --data-kwargs")  # fmt: skip
    model = ["--model", "mynet.py:Net", "--data", "mydata.py:blobs"]
    ok("evaluate", "d.safetensors", *model)
    for loss in ("mse", "myloss.py:smoothed"):
        ok("hessian", "d.safetensors", *model, "--loss", loss, "--samples", "90", "--float64",
           "--quiet", "--json", "l.json", "--force")  # fmt: skip
        report = json.loads(Path("l.json").read_text())
        assert report["loss_function"]["name"] == loss
        net = load_checkpoint("d.safetensors", named_model="mynet.py:Net")[0]
        x, y = import_callable("mydata.py:blobs", "--data").function(n=90)[0].tensors
        fn = import_callable("myloss.py:smoothed", "--loss").function if ":" in loss else None
        with torch.no_grad():
            out = net(x)
            expected = (fn(out, y) if fn else F.mse_loss(out, F.one_hot(y, 3).float())).item()
        assert report["loss"] == pytest.approx(expected, rel=1e-5)
    per_example = run("hessian", "d.safetensors", *model, "--loss", "myloss.py:per_example")
    assert_one_line_error(per_example, "must return the batch's mean loss")


def _state(project) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(3)
    net = import_callable(str(project / "mynet.py") + ":Net", "--model").function()
    return net.eval(), {k: v.clone() for k, v in net.state_dict().items()}


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize(
    "layout",
    ["bare", "lightning", "torchdistill", "ddp", "safetensors", "container"],
)
def test_other_trainers_checkpoints_import_to_identical_outputs(project, layout):
    net, state = _state(project)
    files = {
        "bare": ("w.pt", state),
        "lightning": ("w.ckpt", {"state_dict": {f"model.{k}": v for k, v in state.items()},
                                 "pytorch-lightning_version": "2.4.0", "epoch": 3,
                                 "global_step": 30, "optimizer_states": [], "lr_schedulers": []}),
        "torchdistill": ("w.pt", {"model": state, "optimizer": {"state": {}, "param_groups": []},
                                  "lr_scheduler": {}, "best_value": 0.5,
                                  "args": argparse.Namespace(config="kd.yaml", seed=1)}),
        "ddp": ("w.pth", {f"module.{k}": v for k, v in state.items()}),
        "container": ("w.pth", {"model_state_dict": state, "epoch": 9}),
    }  # fmt: skip
    if layout == "safetensors":
        name = "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, name)
    else:
        name, payload = files[layout]
        torch.save(payload, name)
    ok("import", name, "--model", "mynet.py:Net", "--data-file", "data.npz", "--out",
       "imported.safetensors")  # fmt: skip
    loaded, meta = load_checkpoint("imported.safetensors", named_model="mynet.py:Net")
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert meta["imported_from"]["sha256"] and meta["dataset"]["name"] == "npz"
    ok("evaluate", "imported.safetensors", "--model", "mynet.py:Net")
    ok("evaluate", name, "--model", "mynet.py:Net", "--data-file", "data.npz")
    if layout != "safetensors":  # the same layout with code inside must never run
        evil = dict(files[layout][1]) if isinstance(files[layout][1], dict) else {}
        evil["extra"] = _Payload()
        torch.save(evil, "evil.pt")
        result = run("import", "evil.pt", "--model", "mynet.py:Net", "--data-file", "data.npz",
                     "--out", "evil.safetensors")  # fmt: skip
        assert_one_line_error(result, "refused")
        assert not Path("PWNED").exists() and not Path("evil.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "nosuchmodule:Net"], "no module 'nosuchmodule'"),
        (["--model", "missing.py:Net"], "no file"),
        (["--model", "mynet.py:Nope"], "has no attribute 'Nope'"),
        (["--model", "mynet.py:raises"], "raised RuntimeError: no GPU here"),
        (["--model", "mynet.py:not_a_module"], "returned int, not a torch.nn.Module"),
        (["--model", "mynet.py:Net", "--model-kwargs", "{width: 3}"], "not JSON"),
        (["--model", "mynet.py:Net", "--model-kwargs", '{"depth": 3}'], "unexpected keyword"),
        (["--model", "mynet.py:Net", "--model-kwargs", '{"width": 4}'], "do not fit the model"),
        (["--model", "mlp"], "do not fit the model: 6 missing"),
        (["--model", "resnet20"], "needs inputs of shape (C, H, W)"),
        (["--data", "mydata.py:wrong_labels", "--model", "mynet.py:Net"], "labels of dtype"),
        (["--data-file", "bad.npz", "--model", "mynet.py:Net"], "missing arrays y_test"),
        (["--data-file", "data.npz", "--dataset", "digits", "--model", "cnn1d"], "give one of"),
    ],
)
def test_bad_user_input_is_one_line_and_exit_2(project, args, needle):
    _, state = _state(project)
    torch.save(state, "w.pt")
    np.savez("bad.npz", x_train=np.zeros((4, 6)), y_train=np.zeros(4, dtype=int),
             x_test=np.zeros((4, 6)))  # fmt: skip
    data = [] if any(a.startswith("--data") for a in args) else ["--data-file", "data.npz"]
    for command in (["import", "w.pt", "--out", "o.safetensors"], ["evaluate", "w.pt"]):
        assert_one_line_error(run(*command, *args, *data), needle)
    assert not Path("o.safetensors").exists()
    train = run("train", *data, *args, "--epochs", "1", "--out", "n.safetensors")
    if "fit the model" not in needle:
        assert_one_line_error(train, needle)
    assert not Path("n.safetensors").exists() or train.exit_code == 0


def test_a_recorded_spec_is_never_imported_only_the_named_one(teacher, project):
    """A checkpoint that records other code (evil.py) with a named file's hash imports
    only what the user named; a named file that changed is refused."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save_file as _save

    (project / "evil.py").write_text("open('IMPORTED', 'w').write('evil')\n" + MODEL_FILE)
    with safe_open(str(teacher), framework="pt") as handle:
        meta = _json.loads(handle.metadata()["flatscape"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    meta["arch"] = "evil.py:Net"  # the weights' hash stays valid: only the header lies
    _save(tensors, "forged.safetensors", metadata={"flatscape": _json.dumps(meta)})
    ok("evaluate", "forged.safetensors", "--model", "mynet.py:Net")
    assert not Path("IMPORTED").exists()
    Path("mynet.py").write_text(Path("mynet.py").read_text() + "\n# edited\n")
    assert_one_line_error(run("evaluate", teacher, "--model", "mynet.py:Net"),
                          "is not the code it was made with")  # fmt: skip


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [({"x_train": np.array(["a", "b"]), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 6)),
       "y_test": np.zeros(2, int)}, "arrays must be numbers"),
     ({"x_train": np.zeros((4, 6)), "y_train": np.array(1), "x_test": np.zeros((2, 6)),
       "y_test": np.zeros(2, int)}, "4 inputs but 1 labels"),
     ({"x_train": np.zeros((4, 6)), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 6)),
       "y_test": np.zeros(2, int), "classes": np.array("ten")}, "give a class count"),
     ({"x_train": np.zeros((4, 6)), "y_train": np.zeros(4), "x_test": np.zeros((2, 6)),
       "y_test": np.zeros(2)}, "labels are floats"),
     ({"x_train": np.zeros((4, 6)), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 6)),
       "y_test": np.zeros(2)}, "give one kind")],
)  # fmt: skip
def test_bad_arrays_are_one_line(project, arrays, needle):
    np.savez("bad.npz", **arrays)
    result = run("train", "--data-file", "bad.npz", "--model", "mynet.py:Net", "--epochs", 1,
                 "--out", "b.safetensors")  # fmt: skip
    assert_one_line_error(result, needle)
    assert not Path("b.safetensors").exists() and not Path("b.log.jsonl").exists()


def test_code_that_exits_on_import_and_kwargs_for_a_recorded_model(teacher, project):
    Path("exits.py").write_text("import sys\nsys.exit(3)\n")
    torch.save(_state(project)[1], "w.pt")
    result = run("evaluate", "w.pt", "--model", "exits.py:Net", "--data-file", "data.npz")
    assert_one_line_error(result, "raised SystemExit")
    same = run("evaluate", teacher, "--model", "mynet.py:Net", "--model-kwargs", '{"width": 8}')
    assert same.exit_code == 0, same.output  # repeating what the checkpoint records is fine
    result = run("evaluate", teacher, "--model", "mynet.py:Net", "--model-kwargs", '{"width": 16}')
    assert_one_line_error(result, "records width=8, --model-kwargs says 16; ")
    assert "drop --model-kwargs" in result.stderr


def test_planes_and_trajectories_of_a_user_model(project):
    model = ["--model", "mynet.py:Net"]
    ok("train", "--data-file", "data.npz", *model, "--epochs", "3", "--snapshots", "3",
       "--threads", "1", "--quiet", "--out", "t.safetensors")  # fmt: skip
    ok("distill", "--teacher", "t.safetensors", "--generations", "2", "--epochs", "2", *model,
       "--threads", "1", "--quiet", "--out-dir", "sd")  # fmt: skip
    ok("compare", "t.safetensors", "sd/gen1.safetensors", "sd/gen2.safetensors", *model,
       "--plane", "--plane-points", "5", "--samples", "100", "--top-k", "1", "--trace-matvecs",
       "0", "--line-points", "0", "--quiet", "--json", "c.json")  # fmt: skip
    report = json.loads(Path("c.json").read_text())
    own = {m["name"]: m["train_loss"] for m in report["models"]}
    for mark in report["plane"]["models"]:  # each model's point on the plane is the model
        assert mark["train_loss"] == pytest.approx(own[mark["name"]], rel=1e-5)
    ok("surface", "t.safetensors", *model, "--direction", "pca", "--trajectory",
       "t.snapshots", "--x", "-1:1:3", "--y", "-1:1:3", "--samples", "50", "--quiet",
       "--out", "pca.h5")  # fmt: skip
    assert_one_line_error(run("surface", "t.safetensors", *model, "--direction", "pca",
                              "--trajectory", "t.snapshots", "--x", "-1:1:3", "--y", "-1:1:3",
                              "--model", "mydata.py:blobs", "--out", "p2.h5"),
                          "not mydata.py:blobs")  # fmt: skip


def test_data_that_does_not_fit_the_model_is_one_line(teacher, project):
    rng = np.random.default_rng(1)
    narrow = {"x_train": rng.normal(size=(20, 5)).astype(np.float32),
              "y_train": rng.integers(0, 3, 20), "x_test": rng.normal(size=(8, 5)),
              "y_test": rng.integers(0, 3, 8)}  # fmt: skip
    np.savez("narrow.npz", **narrow)
    np.savez("labels.npz", **{**narrow, "x_train": rng.normal(size=(20, 6)).astype(np.float32),
                              "x_test": rng.normal(size=(8, 6)).astype(np.float32),
                              "y_train": rng.integers(0, 5, 20)})  # fmt: skip
    torch.save(_state(project)[1], "w.pt")
    model = ["--model", "mynet.py:Net"]
    for data, needle in (
        ("narrow.npz", "cannot take this data's inputs of shape (5,)"),
        ("labels.npz", "the labels go from 0 to 4, and the model gives 3"),
    ):
        assert_one_line_error(run("train", "--data-file", data, *model, "--epochs", 1,
                                  "--out", "n.safetensors"), needle)  # fmt: skip
        assert_one_line_error(run("evaluate", "w.pt", *model, "--data-file", data), needle)
        assert_one_line_error(run("import", "w.pt", *model, "--data-file", data, "--out",
                                  "o.safetensors"), needle)  # fmt: skip
    assert not Path("n.safetensors").exists() and not Path("o.safetensors").exists()
    assert not Path("n.log.jsonl").exists()


def test_the_flag_to_pass_works_from_another_folder(teacher, project, monkeypatch):
    inner = project / "inner"
    inner.mkdir()
    monkeypatch.chdir(inner)
    result = run("evaluate", teacher)
    assert_one_line_error(result, "pass --model")
    flag = result.stderr.split("pass --model ", 1)[1].split()[0]
    assert flag == str(project / "mynet.py") + ":Net"
    ok("evaluate", teacher, "--model", flag)


def test_reports_of_other_trainers_files_record_model_and_data(project):
    net, state = _state(project)
    torch.save({"ema": state, "step": 3}, "w.pt")
    torch.save({"state_dict": {f"student.{k}": v for k, v in state.items()}}, "l.ckpt")
    common = ["--model", "mynet.py:Net", "--data-file", "data.npz", "--samples", 50, "--quiet"]
    ok("hessian", "w.pt", "--state-key", "ema", *common, "--json", "h.json")
    found = json.loads(Path("h.json").read_text())["provenance"]
    assert found["model_source"]["source_sha256"] == import_callable(
        "mynet.py:Net", "--model").source_sha256  # fmt: skip
    assert found["dataset"]["path"] == str(project / "data.npz")
    assert found["dataset"]["sha256"] and found["foreign"]["key"] == "ema"
    ok("hessian", "l.ckpt", "--strip-prefix", "student", *common, "--json", "l.json")
    same = json.loads(Path("l.json").read_text())
    assert same["eigenvalues"] == json.loads(Path("h.json").read_text())["eigenvalues"]
    assert_one_line_error(run("hessian", "l.ckpt", *common), "--strip-prefix")
    ok("surface", "w.pt", "--state-key", "ema", *common, "--x", "-1:1:3", "--out", "s.h5")
    import h5py

    with h5py.File("s.h5", "r") as handle:
        stored = json.loads(handle.attrs["provenance"])
    assert stored["dataset"]["sha256"] == found["dataset"]["sha256"]


def test_losses_packages_and_data_dicts_in_every_command(teacher, project, monkeypatch):
    monkeypatch.syspath_prepend(str(project))
    model = ["--model", "mynet:Net"]  # a module on the path, not a file
    ok("train", "--data", "mydata.py:blobs_dict", *model, "--epochs", 1, "--quiet",
       "--out", "p.safetensors")  # fmt: skip
    named = [*model, "--data", "mydata.py:blobs_dict", "--samples", 60, "--quiet"]
    ok("hessian", "p.safetensors", *named, "--loss", "mse", "--json", "h.json")
    mse = json.loads(Path("h.json").read_text())["loss"]
    ok("surface", "p.safetensors", *named, "--loss", "mse", "--x", "-1:1:3", "--out", "s.h5")
    import h5py

    with h5py.File("s.h5", "r") as handle:
        assert float(handle["train_loss"][1]) == pytest.approx(mse, rel=1e-5)
    ok("compare", "p.safetensors", "p.safetensors", *named, "--loss", "mse", "--top-k", 1,
       "--trace-matvecs", 0, "--line-points", 0, "--json", "c.json")  # fmt: skip
    compared = json.loads(Path("c.json").read_text())
    assert compared["loss_function"]["name"] == "mse"
    assert compared["models"][0]["train_loss"] == pytest.approx(mse, rel=1e-5)
    ok("sharpness", "p.safetensors", *named, "--loss", "mse", "--draws", 2, "--steps", 2,
       "--restarts", 1, "--json", "sh.json")  # fmt: skip
    assert json.loads(Path("sh.json").read_text())["loss_function"]["name"] == "mse"


def test_misplaced_data_flags_and_foreign_teachers(teacher, project):
    torch.save(_state(project)[1], "w.pt")
    assert_one_line_error(run("train", "--data-file", "data.npz", "--data-kwargs", '{"n": 1}',
                              "--model", "mynet.py:Net", "--out", "z.safetensors"),
                          "give --data")  # fmt: skip
    assert_one_line_error(run("distill", "--teacher", "w.pt", "--model", "mynet.py:Net",
                              "--out-dir", "x"), "flatscape import w.pt")  # fmt: skip
    rng = np.random.default_rng(2)
    x = {"x_train": rng.normal(size=(20, 6)).astype(np.float32),
         "x_test": np.zeros((4, 6), np.float32)}  # fmt: skip
    np.savez("values.npz", **x, y_train=rng.normal(size=20).astype(np.float32),
             y_test=np.zeros(4, np.float32))  # regression targets  # fmt: skip
    soft = rng.random((20, 3)).astype(np.float32)
    np.savez("soft.npz", **x, y_train=soft / soft.sum(1, keepdims=True),
             y_test=np.full((4, 3), 1 / 3, np.float32))  # per-class soft labels  # fmt: skip
    model = ["--model", "mynet.py:Net", "--quiet", "--samples", 20]
    result = run("hessian", "w.pt", *model, "--data-file", "values.npz")
    assert_one_line_error(result, "--loss cross_entropy needs class labels")
    ok("hessian", "w.pt", *model, "--data-file", "soft.npz", "--json", "soft.json")
    net, _ = _state(project)
    with torch.no_grad():
        expected = F.cross_entropy(net(torch.tensor(x["x_train"])), torch.tensor(soft / soft.sum(
            1, keepdims=True))).item()  # fmt: skip
    assert json.loads(Path("soft.json").read_text())["loss"] == pytest.approx(expected, rel=1e-5)
    assert not Path("z.safetensors").exists() and not Path("x").exists()
