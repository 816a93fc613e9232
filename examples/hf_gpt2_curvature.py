"""Curvature of a Hugging Face GPT-2, straight from ``transformers``: no wrapper class.

The script builds a small ``GPT2LMHeadModel`` from a ``GPT2Config``, saves it with
``save_pretrained`` (the folder ``flatscape --model hf:DIR`` takes) with token data as
``tokens.npz``, loads it back offline, and hands the model itself to
``landscape.model_curvature`` with a ``DataLoader`` of dicts ``({"input_ids": ...},
labels)``. The model returns a ``ModelOutput`` (its ``logits`` are used); its attention
is the default SDPA, whose fused kernel has no double backward, so flatscape computes the
Hessian-vector products with the math kernel. It prints the top eigenvalues of the Hessian
of the mean next-token cross-entropy with their residuals, the Hutch++ trace, and the
``flatscape`` commands that measure the same folder and data from the shell.

Run::

    python examples/hf_gpt2_curvature.py --out-dir runs/hf_gpt2 --sequences 256

A quick look::

    python examples/hf_gpt2_curvature.py --out-dir /tmp/hf_gpt2 --sequences 16 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import landscape

VOCAB, LENGTH = 32, 12


def markov_tokens(sequences: int, seed: int) -> np.ndarray:
    """Token ids from a seeded first-order Markov source (a sparse, peaked transition table)."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(VOCAB, 0.1), size=VOCAB)
    ids = np.empty((sequences, LENGTH), dtype=np.int64)
    ids[:, 0] = rng.integers(0, VOCAB, sequences)
    for t in range(1, LENGTH):
        ids[:, t] = [rng.choice(VOCAB, p=table[i]) for i in ids[:, t - 1]]
    return ids


class Tokens(Dataset):
    """``({"input_ids": ids_i}, ids_i)``: a causal LM's labels are its inputs."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {"input_ids": self.ids[i]}, self.ids[i]


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the next token."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def save_model_and_data(out_dir: Path, sequences: int, seed: int) -> Path:
    """A 2-layer GPT-2 as a ``save_pretrained`` folder, and ``tokens.npz`` beside it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=VOCAB, n_positions=LENGTH,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(out_dir / "gpt2")
    train, test = markov_tokens(sequences, seed), markov_tokens(max(8, sequences // 4), seed + 1)
    np.savez(out_dir / "tokens.npz", x_train=train, y_train=train, x_test=test, y_test=test)
    return out_dir / "gpt2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/hf_gpt2"))
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        sys.exit("this example needs transformers: pip install 'flatscape[hf]'")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    folder = save_model_and_data(args.out_dir, args.sequences, args.seed)
    model = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
    ids = torch.from_numpy(np.load(args.out_dir / "tokens.npz")["x_train"])
    loader = DataLoader(Tokens(ids), batch_size=args.batch_size)
    result = landscape.model_curvature(model, next_token_loss, loader, top_k=2, trace=True,
                                       seed=args.seed)  # fmt: skip

    print(f"model: GPT2LMHeadModel from {folder}, {result.dim} parameters")
    print(f"data: {result.examples} sequences of {LENGTH} tokens ({args.out_dir / 'tokens.npz'})")
    print("eigenvalues: " + " ".join(f"{v:.6g}" for v in result.eigenvalues))
    print("residuals: " + " ".join(f"{r:.3g}" for r in result.eigen.residuals.tolist()))
    print(f"trace: {result.trace.estimate:.6g} +- {result.trace.stderr:.3g} (hutch++)")
    print(f"hessian-vector products: {result.matvecs}")
    print("the same from the shell (the model named by its folder):")
    data = args.out_dir / "tokens.npz"
    print(f"  flatscape hessian {folder}/model.safetensors --model hf:{folder} "
          f"--data-file {data} --loss causal_lm --top-k 2 --samples {args.sequences}")  # fmt: skip
    print(f"  flatscape train --model hf:{folder} --data-file {data} --loss causal_lm "
          f"--out {args.out_dir / 'teacher.safetensors'}")  # fmt: skip


if __name__ == "__main__":
    main()
