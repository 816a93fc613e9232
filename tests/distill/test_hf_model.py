"""Building ``hf:DIR`` folders: offline, safetensors (one file or shards) or a weights-only
``.bin``, tied weights tied, and every unusable folder refused in one line."""

from __future__ import annotations

import json
import os

import pytest
import torch

from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.errors import DistillInputError
from distill.hf_model import build_hf_model, read_folder
from distill.model_spec import build_from_spec
from tests.hf_problems import bert_folder, gpt2_folder, transformers


def _same_weights(model: torch.nn.Module, folder) -> bool:
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    ours, theirs = model.state_dict(), reference.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_gpt2_weights_as_transformers_loads_them_and_lm_head_tied(tmp_path):
    folder = gpt2_folder(tmp_path / "g", n_embd=8)
    model, source = build_from_spec(f"hf:{folder}", {})
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.lm_head.weight is model.transformer.wte.weight
    assert _same_weights(model, folder)
    assert source["config"]["architectures"] == ["GPT2LMHeadModel"]
    assert source["source_sha256"] == read_folder(f"hf:{folder}").config_sha256


def test_builds_with_the_network_unreachable(tmp_path, monkeypatch):
    folder = bert_folder(tmp_path / "b", hidden=8)

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr("socket.socket.connect", no_network)
    model, _ = build_hf_model(f"hf:{folder}", {})
    assert type(model).__name__ == "BertForSequenceClassification"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_sharded_safetensors_are_read_whole(tmp_path):
    folder = gpt2_folder(tmp_path / "g", n_embd=8)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="4KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    built, _ = build_hf_model(f"hf:{sharded}", {})
    assert _same_weights(built, folder)


def test_pytorch_model_bin_only_through_weights_only_load(tmp_path):
    folder = gpt2_folder(tmp_path / "g", n_embd=8)
    model, _ = build_hf_model(f"hf:{folder}", {})
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    built, _ = build_hf_model(f"hf:{folder}", {})
    assert all(torch.equal(built.state_dict()[k], v) for k, v in model.state_dict().items())

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(DistillInputError, match="never unpickles code"):
        build_hf_model(f"hf:{folder}", {})


def test_meta_build_reads_no_weights(tmp_path):
    folder = gpt2_folder(tmp_path / "g", n_embd=8)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with torch.device("meta"):
        model, _ = build_hf_model(f"hf:{folder}", {})
    assert all(p.is_meta for p in model.parameters())
    with pytest.raises(DistillInputError, match="model.safetensors"):
        build_hf_model(f"hf:{folder}", {})


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (None, "no "),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "is not JSON"),
        ('{"model_type": "gpt2"}', 'one model class in "architectures"'),
        ('{"architectures": ["os.system"]}', "does not export"),
        ('{"architectures": ["GPT2Config"]}', "does not export"),
    ],
)
def test_unusable_folders_are_one_line(tmp_path, config, needle):
    folder = tmp_path / "f"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    with pytest.raises(DistillInputError, match=needle) as caught:
        build_hf_model(f"hf:{folder}", {})
    assert "\n" not in str(caught.value)


def test_checkpoint_rebuilds_only_from_the_same_config(tmp_path):
    folder = gpt2_folder(tmp_path / "g", n_embd=8)
    model, source = build_hf_model(f"hf:{folder}", {})
    path = save_checkpoint(tmp_path / "c.safetensors", model, {
        "arch": f"hf:{folder}", "arch_kwargs": {}, "model_source": source,
        "dataset": {"name": "synthetic"}, "role": "teacher", "generation": 0, "seed": 0,
    })  # fmt: skip
    loaded, meta = load_checkpoint(path, named_model=f"hf:{folder}")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert meta["model_source"]["config"] == json.loads((folder / "config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 1}))
    with pytest.raises(DistillInputError, match="config.json is not the one"):
        load_checkpoint(path, named_model=f"hf:{folder}")
