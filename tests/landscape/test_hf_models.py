"""Hugging Face models straight from Python: ``model_curvature`` on a DataLoader of dicts.

No wrapper class: the ``transformers`` model itself (default SDPA attention, a
``ModelOutput`` returned), batches ``({"input_ids", "attention_mask"}, labels)``. The
reference is the dense float64 Hessian of the same weights with eager attention and
Hugging Face's own ``labels=`` loss, its eigenvalues from scipy (:mod:`tests.hf_problems`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from landscape import model_curvature
from tests.hf_problems import (
    bert_folder,
    dense_top_eigenvalues,
    eager_float64,
    gpt2_folder,
    padded,
    token_ids,
    transformers,
)


class Dicts(Dataset):
    """``({"input_ids", "attention_mask"?}, labels)`` per example, as a tokenizer gives."""

    def __init__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {name: value[i] for name, value in self.inputs.items()}, self.labels[i]


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (every sequence has the same length here)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def test_gpt2_dataloader_of_dicts_lambda1_matches_dense_float64(tmp_path):
    folder = gpt2_folder(tmp_path / "gpt2", n_embd=8)
    model = transformers.GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
    ids = torch.from_numpy(token_ids(6, 5))
    loader = DataLoader(Dicts({"input_ids": ids}, ids), batch_size=3)
    result = model_curvature(model, next_token_loss, loader, top_k=2, tol=1e-8,
                             dtype=torch.float64)  # fmt: skip
    dense = dense_top_eigenvalues(eager_float64(folder), {"input_ids": ids, "labels": ids}, k=2)
    assert result.examples == 6
    np.testing.assert_allclose(result.eigenvalues, dense, rtol=1e-6)


def test_bert_masks_and_padding_lambda1_matches_dense_float64(tmp_path):
    folder = bert_folder(tmp_path / "bert", hidden=8)
    model = transformers.BertForSequenceClassification.from_pretrained(
        folder, local_files_only=True
    )
    ids, mask, labels = (torch.from_numpy(array) for array in padded(6, 6))
    inputs = {"input_ids": ids, "attention_mask": mask}
    loader = DataLoader(Dicts(inputs, labels), batch_size=2)
    result = model_curvature(model, F.cross_entropy, loader, top_k=2, tol=1e-8,
                             dtype=torch.float64)  # fmt: skip
    dense = dense_top_eigenvalues(eager_float64(folder), {**inputs, "labels": labels}, k=2)
    assert int(mask.sum()) < mask.numel()  # padding is there, masked
    np.testing.assert_allclose(result.eigenvalues, dense, rtol=1e-6)


def test_per_layer_parts_of_bert_and_gpt2(tmp_path):
    """Embeddings, attention, MLP, norms and head, per block, from the modules' real names."""
    from landscape.curvature.layer_parts import layer_block, layer_parts

    bert = transformers.BertForSequenceClassification.from_pretrained(
        bert_folder(tmp_path / "bert", hidden=8), local_files_only=True
    )
    parts = layer_parts(bert)
    expected = {
        "bert.embeddings.word_embeddings": "embedding",
        "bert.embeddings.LayerNorm": "norm",
        "bert.encoder.layer.0.attention.self.query": "attention",
        "bert.encoder.layer.0.attention.output.dense": "attention",
        "bert.encoder.layer.0.attention.output.LayerNorm": "norm",
        "bert.encoder.layer.1.intermediate.dense": "mlp",
        "bert.encoder.layer.1.output.dense": "mlp",
        "bert.pooler.dense": "head",
        "classifier": "head",
    }
    assert {name: parts[name] for name in expected} == expected
    assert layer_block("bert.encoder.layer.1.output.dense") == "bert.encoder.layer.1"
    gpt2 = transformers.GPT2LMHeadModel.from_pretrained(
        gpt2_folder(tmp_path / "gpt2", n_embd=8), local_files_only=True
    )
    parts = layer_parts(gpt2)
    assert [parts[n] for n in ("transformer.wte", "transformer.h.0.attn.c_proj",
            "transformer.h.0.mlp.c_proj", "transformer.h.1.ln_2", "transformer.ln_f")] == [
        "embedding", "attention", "mlp", "norm", "norm"]  # fmt: skip
