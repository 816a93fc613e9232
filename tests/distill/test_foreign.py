"""Other trainers' checkpoints: every layout loads exactly, and no pickled code ever runs."""

import argparse
import builtins
import json
import os
import pathlib
import pickle
import shlex

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from distill.checkpoint import save_checkpoint
from distill.errors import DistillInputError
from distill.foreign import FORMATS, fit_state, read_foreign_state


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc(torch.relu(self.norm(x)))


class SmallNet(nn.Module):
    """Linear, LayerNorm, a residual block and BatchNorm1d (buffers incl. num_batches_tracked)."""

    def __init__(self, width=8):
        super().__init__()
        self.inp = nn.Linear(5, width)
        self.norm = nn.LayerNorm(width)
        self.block = Residual(width)
        self.bn = nn.BatchNorm1d(width)
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        return self.out(self.bn(self.block(self.norm(self.inp(x)))))


class OtherNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Linear(5, 8)
        self.head = nn.Linear(8, 3)


@pytest.fixture(scope="module")
def trained():
    """A SmallNet whose weights and BatchNorm statistics are far from a fresh model's."""
    torch.manual_seed(0)
    model = SmallNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    model.eval()
    return model, opt, sched


def _inputs():
    return torch.randn(6, 5, generator=torch.Generator().manual_seed(7))


def _assert_same_function(original, tensors):
    torch.manual_seed(123)
    fresh = SmallNet()
    fit_state(fresh, tensors, "test")
    fresh.eval()
    assert torch.equal(fresh(_inputs()), original(_inputs()))
    assert fresh.bn.num_batches_tracked.dtype == torch.int64
    assert fresh.bn.num_batches_tracked.item() == 3


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


def _lightning(sd, opt, prefix="model.", **beside):
    return {
        "state_dict": _prefixed(sd, prefix),
        "pytorch-lightning_version": "2.4.0",
        "epoch": 5,
        "global_step": 100,
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [],
        **beside,
    }


def _torchdistill(sd, opt, sched, **args):
    return {
        "model": sd,
        "optimizer": opt.state_dict(),
        "best_value": 0.75,
        "lr_scheduler": sched.state_dict(),
        "args": argparse.Namespace(lr=0.1, epochs=2, config="x.yaml", **args),
    }


LIGHTNING_EXTRA = {"pytorch-lightning_version": "2.4.0", "epoch": 5, "global_step": 100}
TORCHDISTILL_EXTRA = {
    "best_value": 0.75,
    "args": {"lr": 0.1, "epochs": 2, "config": "x.yaml"},
}

# name -> (build(sd, opt, sched), suffix, format, key, stripped, extra)
LAYOUTS = {
    "bare": (lambda sd, o, s: sd, ".pt", "state_dict", None, None, {}),
    "model_state_dict": (
        lambda sd, o, s: {"model_state_dict": sd, "epoch": 3},
        ".pth",
        "container",
        "model_state_dict",
        None,
        {"epoch": 3},
    ),
    "net": (lambda sd, o, s: {"net": sd}, ".bin", "container", "net", None, {}),
    "lightning": (
        lambda sd, o, s: _lightning(sd, o),
        ".ckpt",
        "lightning",
        "state_dict",
        "model.",
        LIGHTNING_EXTRA,
    ),  # fmt: skip
    "lightning_student": (
        lambda sd, o, s: _lightning(sd, o, "student."),
        ".ckpt",
        "lightning",
        "state_dict",
        "student.",
        LIGHTNING_EXTRA,
    ),  # fmt: skip
    "torchdistill": (
        lambda sd, o, s: _torchdistill(sd, o, s),
        ".pth",
        "torchdistill",
        "model",
        None,
        TORCHDISTILL_EXTRA,
    ),  # fmt: skip
    "ddp": (lambda sd, o, s: _prefixed(sd, "module."), ".pt", "state_dict", None, "module.", {}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_loads_to_the_same_function(tmp_path, trained, layout):
    model, opt, sched = trained
    build, suffix, fmt, key, stripped, extra = LAYOUTS[layout]
    path = tmp_path / f"ckpt{suffix}"
    torch.save(build(model.state_dict(), opt, sched), path)
    state = read_foreign_state(path)
    assert (state.format, state.key, state.stripped) == (fmt, key, stripped)
    assert state.format in FORMATS
    assert state.extra == extra
    assert json.loads(json.dumps(state.extra, allow_nan=False)) == state.extra
    assert list(state.tensors) == list(model.state_dict())
    assert all(t.device.type == "cpu" for t in state.tensors.values())
    _assert_same_function(model, state.tensors)


def test_plain_safetensors_loads_to_the_same_function(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "other.safetensors"
    save_file(_prefixed(model.state_dict(), "module."), str(path), metadata={"format": "pt"})
    state = read_foreign_state(path)
    assert (state.format, state.key, state.stripped) == ("safetensors", None, "module.")
    assert state.extra == {"metadata": {"format": "pt"}}
    _assert_same_function(model, state.tensors)


def test_torchdistill_args_keep_only_json_safe_values(tmp_path, trained):
    model, opt, sched = trained
    path = tmp_path / "td.pth"
    ckpt = _torchdistill(model.state_dict(), opt, sched, device=torch.device("cpu"),
                         milestones=(1, 2), dtype=torch.float16, gamma=float("nan"))  # fmt: skip
    torch.save(ckpt, path)
    state = read_foreign_state(path)
    assert state.extra == {
        "best_value": 0.75,
        "args": {"lr": 0.1, "epochs": 2, "config": "x.yaml", "milestones": [1, 2]},
        "dropped_args": ["device", "dtype", "gamma"],
    }
    ckpt["args"] = {"lr": 0.1, "train": {"epochs": 2, "optimizer": "sgd"}}  # newer: a dict
    torch.save(ckpt, path)
    state = read_foreign_state(path)
    assert state.format == "torchdistill"
    assert state.extra["args"] == {"lr": 0.1, "train": {"epochs": 2, "optimizer": "sgd"}}
    assert "dropped_args" not in state.extra


def test_lightning_hyper_parameters_are_kept(tmp_path, trained):
    model, opt, _ = trained
    path = tmp_path / "l.ckpt"
    hp = {"lr": 0.01, "width": 8, "loss": nn.CrossEntropyLoss.__name__}
    torch.save(_lightning(model.state_dict(), opt, hyper_parameters=hp), path)
    assert read_foreign_state(path).extra == {**LIGHTNING_EXTRA, "hyper_parameters": hp}


# --- pickled code never runs -------------------------------------------------------------


def write_marker(path):
    pathlib.Path(path).write_text("ran")


class ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, ("touch " + shlex.quote(str(self.marker)),)


class WriteTextPayload(ShellPayload):
    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "ran")


class ExecPayload(ShellPayload):
    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class CallPayload(ShellPayload):
    def __reduce__(self):
        return write_marker, (str(self.marker),)


class Opaque:
    """A plain user object: no code of its own, but unpickling it needs its class."""

    def __init__(self, marker):
        self.marker = str(marker)


# name -> (make(marker), the global torch's unpickler names)
PAYLOADS = {
    "os.system": (ShellPayload, "posix.system"),
    "Path.write_text": (WriteTextPayload, "getattr"),
    "exec": (ExecPayload, "exec"),
    "function": (CallPayload, "write_marker"),
    "user class": (Opaque, "Opaque"),
}

# name -> (embed(sd, opt, sched, payload), suffix, legacy serialization)
PLACEMENTS = {
    "in bare state dict": (lambda sd, o, s, p: {**sd, "evil": p}, ".pt", False),
    "beside container weights": (
        lambda sd, o, s, p: {"model_state_dict": sd, "epoch": 3, "note": p},
        ".pth",
        False,
    ),
    "in container weights": (lambda sd, o, s, p: {"net": {**sd, "evil": p}}, ".bin", False),
    "beside lightning weights": (
        lambda sd, o, s, p: _lightning(sd, o, callbacks={"EarlyStopping": p}),
        ".ckpt",
        False,
    ),
    "in lightning weights": (
        lambda sd, o, s, p: _lightning({**sd, "evil": p}, o),
        ".ckpt",
        False,
    ),
    "in lightning hyper_parameters": (
        lambda sd, o, s, p: _lightning(sd, o, hyper_parameters={"loss": p}),
        ".ckpt",
        False,
    ),
    "in torchdistill args": (lambda sd, o, s, p: _torchdistill(sd, o, s, hook=p), ".pth", False),
    "as torchdistill best_value": (
        lambda sd, o, s, p: {**_torchdistill(sd, o, s), "best_value": p},
        ".pth",
        False,
    ),
    "in ddp weights": (
        lambda sd, o, s, p: {**_prefixed(sd, "module."), "module.evil": p},
        ".pt",
        False,
    ),
    "legacy serialization": (lambda sd, o, s, p: {"model": sd, "x": p}, ".pt", True),
}


@pytest.mark.parametrize("payload", [name for name in PAYLOADS if name != "user class"])
def test_payloads_run_under_plain_pickle(tmp_path, payload):
    """The payloads are live: an ordinary unpickler runs them (so their refusal means something)."""
    make, _ = PAYLOADS[payload]
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(make(marker)))
    assert marker.exists()


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_pickled_code_is_refused_and_never_runs(tmp_path, trained, payload, placement):
    model, opt, sched = trained
    make, global_name = PAYLOADS[payload]
    embed, suffix, legacy = PLACEMENTS[placement]
    marker = tmp_path / "marker"
    path = tmp_path / f"evil{suffix}"
    obj = embed(model.state_dict(), opt, sched, make(marker))
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(DistillInputError) as caught:
        read_foreign_state(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused: the pickle holds more than tensors")
    assert message.endswith("; flatscape never unpickles code")
    assert global_name in message
    assert "\n" not in message and "weights_only" not in message
    assert not marker.exists()
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # nothing leaked


# --- what does not fit ------------------------------------------------------------------


def test_strip_prefix_given(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "net.pt"
    torch.save(_prefixed(model.state_dict(), "net."), path)
    for prefix in ("net", "net."):
        state = read_foreign_state(path, strip_prefix=prefix)
        assert (state.format, state.stripped) == ("state_dict", "net.")
        _assert_same_function(model, state.tensors)


def test_wrong_strip_prefix_names_the_first_keys(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "net.pt"
    torch.save(_prefixed(model.state_dict(), "net."), path)
    with pytest.raises(DistillInputError) as caught:
        read_foreign_state(path, strip_prefix="model")
    assert str(caught.value) == (
        f"{path}: no key starts with 'model.' (--strip-prefix); the first are "
        "net.inp.weight, net.inp.bias, net.norm.weight"
    )


def test_state_key_chooses_and_a_missing_one_names_the_keys(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "two.pt"
    torch.save({"ema": model.state_dict(), "raw": {"w": torch.ones(1)}, "step": 9}, path)
    state = read_foreign_state(path, state_key="ema")
    assert (state.format, state.key, state.extra) == ("container", "ema", {"step": 9})
    _assert_same_function(model, state.tensors)
    with pytest.raises(DistillInputError) as caught:
        read_foreign_state(path, state_key="weights")
    assert str(caught.value) == (
        f"{path}: no key 'weights' (--state-key); it has keys 'ema', 'raw', 'step'"
    )


def test_no_state_dict_says_state_key(tmp_path, trained):
    model, opt, _ = trained
    path = tmp_path / "odd.pt"
    torch.save({"weights": model.state_dict(), "model": "resnet", "opt": opt.state_dict()}, path)
    with pytest.raises(DistillInputError) as caught:
        read_foreign_state(path)
    assert str(caught.value) == (
        f"{path}: no state dict under any of state_dict, model, model_state_dict, net, module; "
        "it has keys 'weights', 'model', 'opt'; pass --state-key with the one that holds the "
        "weights"
    )


def test_non_tensor_in_chosen_state_dict_is_named(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "odd.pt"
    torch.save({"weights": {**model.state_dict(), "version": 2}}, path)
    with pytest.raises(
        DistillInputError, match="'weights': entry 'version' is of type int, not a tensor"
    ):
        read_foreign_state(path, state_key="weights")


def test_top_level_list_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(DistillInputError, match="holds an object of type list, not a state dict"):
        read_foreign_state(path)


@pytest.mark.parametrize("damage", ["truncated", "text", "empty"])
def test_damaged_file_is_not_readable(tmp_path, trained, damage):
    model, _, _ = trained
    path = tmp_path / "bad.pt"
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "text": b"not a checkpoint", "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(DistillInputError) as caught:
        read_foreign_state(path)
    assert str(caught.value).startswith(f"{path}: not a readable PyTorch checkpoint (")
    if damage == "truncated":
        assert "(RuntimeError: PytorchStreamReader failed reading zip archive" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_flatscape_safetensors_is_sent_to_its_own_reader(tmp_path, trained):
    model, _, _ = trained
    path = save_checkpoint(tmp_path / "mine.safetensors", model, {"arch": "x"})
    with pytest.raises(DistillInputError) as caught:
        read_foreign_state(path)
    assert str(caught.value) == f"{path}: this is a flatscape checkpoint; open it directly"


def test_public_names():
    import distill

    assert distill.read_foreign_state is read_foreign_state and distill.fit_state is fit_state


def test_unknown_suffix_and_missing_file(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"x")
    with pytest.raises(DistillInputError, match=r"unknown checkpoint type '\.npz'"):
        read_foreign_state(path)
    with pytest.raises(DistillInputError, match="not found"):
        read_foreign_state(tmp_path / "nothing.pt")


def test_lightning_prefix_is_kept_unless_every_key_shares_it(tmp_path, trained):
    model, opt, _ = trained
    path = tmp_path / "l.ckpt"
    ckpt = _lightning(model.state_dict(), opt)
    ckpt["state_dict"]["criterion.weight"] = torch.ones(3)
    torch.save(ckpt, path)
    state = read_foreign_state(path)
    assert (state.format, state.stripped) == ("lightning", None)
    assert "model.inp.weight" in state.tensors and "criterion.weight" in state.tensors


def test_unstripped_lightning_keys_hint_strip_prefix(tmp_path, trained):
    model, opt, _ = trained
    path = tmp_path / "l.ckpt"
    torch.save(_lightning(model.state_dict(), opt), path)
    state = read_foreign_state(path, strip_prefix="")
    assert state.stripped is None
    with pytest.raises(DistillInputError) as caught:
        fit_state(SmallNet(), state.tensors, str(path))
    assert str(caught.value) == (
        f"{path}: the weights do not fit the model: "
        "15 missing (inp.weight, inp.bias, norm.weight, ...), "
        "15 unexpected (model.inp.weight, model.inp.bias, model.norm.weight, ...); "
        "the unexpected keys fit once 'model.' is removed: pass --strip-prefix model"
    )


def test_two_level_prefix_hint(trained):
    model, _, _ = trained
    tensors = _prefixed(model.state_dict(), "module.model.")
    with pytest.raises(DistillInputError, match="pass --strip-prefix module.model$"):
        fit_state(SmallNet(), tensors, "x")


def test_another_architecture_names_counts_and_first_keys(trained):
    model, _, _ = trained
    with pytest.raises(DistillInputError) as caught:
        fit_state(OtherNet(), model.state_dict(), "teacher.pt")
    assert str(caught.value) == (
        "teacher.pt: the weights do not fit the model: "
        "4 missing (features.weight, features.bias, head.weight, ...), "
        "15 unexpected (inp.weight, inp.bias, norm.weight, ...)"
    )
    fewer = {k: v for k, v in model.state_dict().items() if not k.startswith("bn.")}
    with pytest.raises(DistillInputError) as caught:
        fit_state(SmallNet(), fewer, "s.pt")
    assert str(caught.value) == (
        "s.pt: the weights do not fit the model: 5 missing (bn.weight, bn.bias, bn.running_mean, "
        "...)"
    )


def test_shape_mismatch_names_key_and_shapes(trained):
    model, _, _ = trained
    with pytest.raises(DistillInputError) as caught:
        fit_state(SmallNet(width=4), model.state_dict(), "t.pt")
    assert str(caught.value) == (
        "t.pt: the weights do not fit the model: inp.weight has shape (8, 5), "
        "the model needs (4, 5)"
    )


def test_floats_are_cast_and_integers_never(trained):
    model, _, _ = trained
    doubled = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    _assert_same_function(model, doubled)  # float32 -> float64 -> float32 is exact
    narrowed = dict(model.state_dict())
    narrowed["bn.num_batches_tracked"] = narrowed["bn.num_batches_tracked"].int()
    fresh = SmallNet()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(DistillInputError) as caught:
        fit_state(fresh, narrowed, "t.pt")
    assert str(caught.value) == (
        "t.pt: bn.num_batches_tracked is torch.int32, the model needs torch.int64; "
        "only floating-point tensors are cast"
    )
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_metadata_is_ignored_and_other_values_are_named(trained):
    model, _, _ = trained
    state = model.state_dict()
    assert hasattr(state, "_metadata")
    _assert_same_function(model, {**state, "_metadata": state._metadata})
    with pytest.raises(DistillInputError) as caught:
        fit_state(SmallNet(), {**state, "epoch": 3}, "t.pt")
    assert str(caught.value) == (
        "t.pt: entry 'epoch' is of type int, not a tensor; a state dict holds only tensors"
    )


ODD_TENSORS = {
    "sparse_coo": (lambda: torch.eye(3).to_sparse(), "a sparse_coo tensor"),
    "sparse_csr": (lambda: torch.eye(3).to_sparse_csr(), "a sparse_csr tensor"),
    "quantized": (
        lambda: torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8),
        "a quantized tensor",
    ),
    "complex": (lambda: torch.randn(3, dtype=torch.complex64), "a complex tensor"),
    "meta": (lambda: torch.empty(3, device="meta"), "a meta tensor"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", sorted(ODD_TENSORS))
def test_tensors_that_are_not_dense_and_real_are_refused_by_name(tmp_path, kind):
    make, needle = ODD_TENSORS[kind]
    path = tmp_path / f"{kind}.pt"
    torch.save({"fc.bias": torch.zeros(3), "fc.weight": make()}, path)
    with pytest.raises(DistillInputError, match=f"entry 'fc.weight' is {needle}"):
        read_foreign_state(path)
