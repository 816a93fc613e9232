"""distill's model call and output rule give landscape's answers (distill cannot import it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from distill import model_call
from distill.errors import DistillInputError
from distill.user_data import load_npz
from landscape import _types
from landscape.errors import LandscapeInputError
from tests.landscape.token_models import BatchEncoding, ModelOutput, TinyAttention, token_data


@dataclasses.dataclass
class Output:
    hidden: torch.Tensor
    scores: torch.Tensor


A, B = torch.zeros(2, 3), torch.ones(2, 3)
OUTPUTS = [A, ModelOutput(loss=B, logits=A), {"scores": A, "x": B}, (A, B), [A], Output(A, B)]


@pytest.mark.parametrize("raw", OUTPUTS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("key", [None, "logits", "scores"])
def test_the_output_rule_is_landscapes(raw, key):
    try:
        expected = _types.model_outputs(raw, key)
    except LandscapeInputError:
        with pytest.raises(DistillInputError):
            model_call.model_outputs(raw, key)
        return
    assert model_call.model_outputs(raw, key) is expected


def test_a_dict_batch_is_keywords_a_user_dict_too():
    torch.manual_seed(0)
    model = TinyAttention()
    inputs, _ = token_data(8)
    expected = model(**inputs).logits
    for batch in (inputs, BatchEncoding(inputs)):
        assert torch.equal(model_call.logits_of(model, batch), expected)
        assert torch.equal(_types.model_outputs(_types.call_model(model, batch)), expected)


def test_npz_integer_arrays_stay_integer_and_extras_make_dict_inputs(tmp_path):
    inputs, labels = token_data(10)
    floats = np.random.default_rng(0).normal(size=(4, 3))
    np.savez(tmp_path / "t.npz", x_train=inputs["input_ids"].numpy().astype(np.int32),
             x_train__attention_mask=inputs["attention_mask"].numpy(), y_train=labels.numpy(),
             x_test=inputs["input_ids"].numpy()[:4].astype(np.int32),
             x_test__attention_mask=inputs["attention_mask"].numpy()[:4],
             y_test=labels.numpy()[:4])  # fmt: skip
    bundle = load_npz(tmp_path / "t.npz")
    train, _ = bundle.train.tensors
    assert train["input_ids"].dtype == torch.int32 and train["input_ids"].shape == (10, 6)
    assert torch.equal(train["attention_mask"], inputs["attention_mask"])
    item, label = bundle.train[3]
    assert torch.equal(item["input_ids"], inputs["input_ids"][3].int()) and label == labels[3]
    np.savez(tmp_path / "f.npz", x_train=floats, y_train=np.arange(4) % 2, x_test=floats,
             y_test=np.arange(4) % 2)  # fmt: skip
    assert load_npz(tmp_path / "f.npz").train.tensors[0].dtype == torch.float32
