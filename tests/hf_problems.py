"""Small Hugging Face models saved with ``save_pretrained``, token data, and references.

The references are a second implementation: the model rebuilt with *eager* attention
(flatscape runs the default SDPA), in float64, its loss the one Hugging Face computes
from ``labels=`` (``.loss``), and its eigenvalues from scipy, on a dense Hessian
(``torch.autograd.functional.hessian``) where the model is small enough, else by
``scipy.sparse.linalg.eigsh`` on exact float64 Hessian-vector products.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.linalg import eigh
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: pip install 'flatscape[hf]'"
)

VOCAB, LENGTH, CLASSES = 32, 12, 3


def gpt2_folder(path: Path, n_embd: int = 64, seed: int = 0) -> Path:
    """A 2-layer ``GPT2LMHeadModel`` saved with ``save_pretrained`` (lm_head tied)."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=n_embd, n_head=2, vocab_size=VOCAB, n_positions=16,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return path


def bert_folder(path: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A 2-layer ``BertForSequenceClassification`` saved with ``save_pretrained``."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=CLASSES,
        pad_token_id=0,
    )  # fmt: skip
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    return path


def token_ids(n: int, seed: int) -> np.ndarray:
    """``n`` sequences of ``LENGTH`` token ids in 1..VOCAB-1 (0 is padding)."""
    return np.random.default_rng(seed).integers(1, VOCAB, (n, LENGTH))


def padded(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids padded with 0 after a random length (3..LENGTH), the mask, and class labels."""
    rng = np.random.default_rng(seed)
    ids = token_ids(n, seed)
    lengths = rng.integers(3, LENGTH + 1, n)
    mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask, rng.integers(0, CLASSES, n)


def gpt2_npz(path: Path, train: int = 32, test: int = 8) -> Path:
    """Token data for a causal LM: the labels are the inputs themselves."""
    x, xt = token_ids(train, 1), token_ids(test, 2)
    np.savez(path, x_train=x, y_train=x, x_test=xt, y_test=xt)
    return path


def bert_npz(path: Path, train: int = 32, test: int = 8) -> Path:
    """Padded ids with ``x_<split>__attention_mask`` and one class per sequence."""
    (x, m, y), (xt, mt, yt) = padded(train, 3), padded(test, 4)
    np.savez(path, x_train=x, x_train__attention_mask=m, y_train=y,
             x_test=xt, x_test__attention_mask=mt, y_test=yt)  # fmt: skip
    return path


def eager_float64(folder: Path, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The folder's model with eager attention in float64, eval mode, ``state`` loaded."""
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    config._attn_implementation = "eager"
    model = getattr(transformers, config.architectures[0])(config)
    if state is None:
        state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.double().eval()


def _hf_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]):
    """``theta -> model(**inputs).loss`` over the flat parameters (ties kept)."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = theta.split([s.numel() for s in shapes])
        tensors = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return functional_call(model, tensors, (), inputs).loss

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, flat


def dense_top_eigenvalues(model: torch.nn.Module, inputs: dict, k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues of the dense float64 Hessian of HF's own loss."""
    loss, flat = _hf_loss(model, inputs)
    hessian = torch.autograd.functional.hessian(loss, flat, vectorize=True).numpy()
    return eigh(hessian, eigvals_only=True)[::-1][:k]


def eigsh_top_eigenvalues(model: torch.nn.Module, inputs: dict, k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues by scipy ``eigsh`` on float64 Hessian-vector products."""
    loss, flat = _hf_loss(model, inputs)

    def matvec(v: np.ndarray) -> np.ndarray:
        vector = torch.from_numpy(np.ascontiguousarray(v).reshape(-1))
        return torch.autograd.functional.hvp(loss, flat, vector)[1].numpy()

    operator = LinearOperator((flat.numel(), flat.numel()), matvec=matvec, dtype=np.float64)
    values = eigsh(operator, k=k, which="LA", tol=1e-10, v0=np.ones(flat.numel()))[0]
    return np.sort(values)[::-1]
