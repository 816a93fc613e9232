"""Checkpoints: round trip, metadata, and refusal of corrupted, tampered or pickled files."""

import json
import struct

import pytest
import torch

from distill.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from distill.errors import DistillInputError
from distill.models import build_model


def test_round_trip_gives_identical_outputs(mnist1d_teacher):
    model, meta = load_checkpoint(mnist1d_teacher)
    again, _ = load_checkpoint(mnist1d_teacher)
    x = torch.randn(7, 40)
    torch.testing.assert_close(model(x), again(x), rtol=0, atol=0)
    assert not model.training
    for key in ("schema", "arch", "arch_kwargs", "dataset", "role", "generation", "seed",
                "recipe", "metrics", "versions", "weights_sha256"):  # fmt: skip
        assert key in meta
    assert meta["role"] == "teacher" and meta["generation"] == 0


def test_student_records_parent_and_kd(mnist1d_teacher, mnist1d_student):
    _, meta = load_checkpoint(mnist1d_student)
    assert meta["role"] == "student" and meta["generation"] == 1
    assert meta["parent_sha256"] == file_sha256(mnist1d_teacher)
    assert meta["kd"]["temperature"] == 4.0 and meta["kd"]["alpha"] == 1.0
    assert "alpha weights" in meta["kd"]["alpha_meaning"]


def test_saving_is_byte_deterministic(tmp_path, mnist1d_teacher):
    model, meta = load_checkpoint(mnist1d_teacher)
    meta = {k: v for k, v in meta.items() if k not in ("schema", "weights_sha256")}
    save_checkpoint(tmp_path / "a.safetensors", model, meta)
    save_checkpoint(tmp_path / "b.safetensors", model, meta)
    assert file_sha256(tmp_path / "a.safetensors") == file_sha256(tmp_path / "b.safetensors")
    assert file_sha256(tmp_path / "a.safetensors") == file_sha256(mnist1d_teacher)


def test_truncated_file_is_refused(tmp_path, mnist1d_teacher):
    data = mnist1d_teacher.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DistillInputError, match="not a readable"):
        load_checkpoint(bad)


def test_flipped_weight_byte_is_refused(tmp_path, mnist1d_teacher):
    data = bytearray(mnist1d_teacher.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(DistillInputError, match="SHA-256"):
        load_checkpoint(bad)


def _rewrite_header(path, out, edit):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    out.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + size :])


def test_edited_metadata_is_refused(tmp_path, mnist1d_teacher):
    def set_garbage(header):
        header["__metadata__"]["flatscape"] = "{not json"

    bad = tmp_path / "meta.safetensors"
    _rewrite_header(mnist1d_teacher, bad, set_garbage)
    with pytest.raises(DistillInputError, match="not valid JSON"):
        load_checkpoint(bad)


def test_weights_that_do_not_fit_the_architecture(tmp_path, mnist1d_teacher):
    def claim_width_16(header):
        meta = json.loads(header["__metadata__"]["flatscape"])
        meta["arch_kwargs"]["width"] = 16
        header["__metadata__"]["flatscape"] = json.dumps(meta)

    bad = tmp_path / "arch.safetensors"
    _rewrite_header(mnist1d_teacher, bad, claim_width_16)
    with pytest.raises(DistillInputError, match="do not fit architecture cnn1d"):
        load_checkpoint(bad)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(DistillInputError, match="not a flatscape checkpoint; name its model"):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"weight": _Payload()}, path)
    with pytest.raises(DistillInputError, match="refused"):
        load_checkpoint(path, arch="mlp")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_plain_state_dict_loads_with_arch(tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", input_dim=16, num_classes=4)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    loaded, meta = load_checkpoint(tmp_path / "plain.pt", arch="mlp",
                                   arch_kwargs={"input_dim": 16, "num_classes": 4})  # fmt: skip
    x = torch.randn(3, 16)
    torch.testing.assert_close(loaded(x), model(x))
    assert meta["schema"] == 0


def test_missing_file(tmp_path):
    with pytest.raises(DistillInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def _hidden(widths):
    def edit(header):
        header["arch_kwargs"]["hidden"] = widths

    return edit


@pytest.mark.parametrize("widths", [[10**7, 10**7], [14_000, 14_000], [2**62, 2**62]])
def test_declared_shapes_are_checked_before_anything_is_allocated(tmp_path, widths, monkeypatch):
    """400 TB, 800 MB or an overflowing size: refused on the meta device, never built."""
    import distill.checkpoint as checkpoint_module
    from tests.distill.lying import lying

    real_builds = []
    original = checkpoint_module.build_from_spec

    def build(spec, kwargs):
        if torch.empty(0).device.type != "meta":  # outside `with torch.device("meta")`
            real_builds.append(spec)
        return original(spec, kwargs)

    monkeypatch.setattr(checkpoint_module, "build_from_spec", build)
    path = lying(tmp_path / "lying.safetensors", _hidden(widths))
    with pytest.raises(DistillInputError, match="arch"):
        load_checkpoint(path)
    assert real_builds == []


USER_MODELS = """
import torch
from torch import nn


def on_meta(width=8):
    return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4))


def not_on_meta(width=8):
    model = on_meta(width)
    torch.zeros(1).numpy()  # reads values: fails on the meta device
    return model
"""


@pytest.mark.parametrize("name", ["on_meta", "not_on_meta"])
def test_user_models_are_checked_on_meta_or_within_a_budget(tmp_path, name):
    from distill.model_spec import build_from_spec
    from tests.distill.lying import valid_header, write

    code = tmp_path / "nets.py"
    code.write_text(USER_MODELS)
    spec = f"{code}:{name}"
    model, source = build_from_spec(spec, {"width": 8})
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    header = {**valid_header(weights), "arch": spec, "arch_kwargs": {"width": 8},
              "model_source": source}  # fmt: skip
    loaded, _ = load_checkpoint(
        write(tmp_path / "ok.safetensors", weights, header), named_model=spec
    )
    x = torch.randn(3, 16)
    torch.testing.assert_close(loaded(x), model(x))
    header["arch_kwargs"] = {"width": 10**7}  # 800 MB of weights: over the budget
    path = write(tmp_path / "lying.safetensors", weights, header)
    needle = "do not fit" if name == "on_meta" else "cannot be built on the meta device"
    with pytest.raises(DistillInputError, match=needle):
        load_checkpoint(path, named_model=spec)
