"""The built-in token dataset and the tiny GPT: the data's structure, and every command on it."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.data import load_dataset
from distill.errors import DistillInputError
from tests.references import dense_hessian


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _conditional_entropy(context: np.ndarray, following: np.ndarray) -> float:
    """Empirical H(following | context) in nats, contexts given as rows of ints."""
    keys, inverse = np.unique(context, axis=0, return_inverse=True)
    total = 0.0
    for k in range(len(keys)):
        _, counts = np.unique(following[inverse.ravel() == k], return_counts=True)
        p = counts / counts.sum()
        total += counts.sum() * float(-(p * np.log(p)).sum())
    return total / len(following)


def test_sequences_are_seeded_integer_and_their_own_labels():
    bundle = load_dataset("tokens", seed=3, n_train=64, n_test=16, length=12, vocab=10)
    x, y = bundle.train.tensors
    assert x.dtype == torch.int64 and x.shape == (64, 12) and torch.equal(x, y)
    assert bundle.num_classes == 10 and bundle.input_shape == (12,)
    assert int(x.max()) < 10 and int(x[:, 0].max()) < 4  # the first token is the topic
    again = load_dataset("tokens", seed=3, n_train=64, n_test=16, length=12, vocab=10)
    assert torch.equal(again.train.tensors[0], x)
    other = load_dataset("tokens", seed=4, n_train=64, n_test=16, length=12, vocab=10)
    assert not torch.equal(other.train.tensors[0], x)


def test_the_topic_far_back_carries_information_the_last_token_does_not():
    x = load_dataset("tokens", n_train=4000).train.tensors[0].numpy()
    previous, following = x[:, 1:-1].reshape(-1, 1), x[:, 2:].reshape(-1)
    topic = np.repeat(x[:, :1], x.shape[1] - 2, axis=1).reshape(-1, 1)
    bigram = _conditional_entropy(previous, following)
    with_topic = _conditional_entropy(np.hstack([previous, topic]), following)
    assert with_topic < bigram - 0.3  # nats: attention to position 0 pays
    assert with_topic < 1.1  # at most three successors per (topic, token)


def test_options_are_capped_and_label_noise_refused():
    with pytest.raises(DistillInputError, match="length"):
        load_dataset("tokens", length=1)
    with pytest.raises(DistillInputError, match="neither label noise"):
        load_dataset("tokens", label_noise=0.1)
    with pytest.raises(DistillInputError, match="topics 8 must be at most vocab 4"):
        load_dataset("tokens", vocab=4, topics=8)


def test_every_command_on_the_built_in_transformer(tmp_path):
    """train (causal_lm by default), distill, hessian (float64, against the dense
    reverse-over-reverse Hessian), surface and compare, by flags alone: the measurements
    take the loss the checkpoint records."""
    small = ["--model-kwargs", '{"width": 8, "layers": 1, "heads": 2}']
    teacher = tmp_path / "t.safetensors"
    common = ["--threads", "1", "--quiet"]
    trained = run("train", "--dataset", "tokens", *small, "--epochs", "2", "--out", teacher,
                  *common)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    distilled = run("distill", "--teacher", teacher, "--generations", "1", "--epochs", "1",
                    "--out-dir", tmp_path / "sd", *common)  # fmt: skip
    assert distilled.exit_code == 0, distilled.output
    report = tmp_path / "h.json"
    measured = run("hessian", teacher, "--samples", "16", "--top-k", "1", "--float64",
                   "--tol", "1e-8", "--json", report, *common)  # fmt: skip
    assert measured.exit_code == 0, measured.output
    document = json.loads(report.read_text())
    assert document["loss_function"]["name"] == "causal_lm"  # recorded by train
    lambda_1 = document["eigenvalues"][0]

    from distill.checkpoint import load_checkpoint
    from distill.losses import causal_lm_loss

    model, _ = load_checkpoint(teacher)
    model = model.double()
    ids = load_dataset("tokens").train.tensors[0][:16]
    dense = dense_hessian(model, causal_lm_loss, ids, ids)
    assert lambda_1 == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-6)
    surface = run("surface", teacher, "--x", "-1:1:3", "--samples", "32",
                  "--out", tmp_path / "s.h5", *common)  # fmt: skip
    assert surface.exit_code == 0, surface.output
    compared = run("compare", teacher, tmp_path / "sd" / "gen1.safetensors", "--samples",
                   "32", "--top-k", "1", "--trace-matvecs", "0", "--line-points", "3",
                   *common)  # fmt: skip
    assert compared.exit_code == 0, compared.output
    assert "gen1" in compared.stdout


def test_npz_token_data_counts_its_vocabulary_and_refuses_all_padding(tmp_path):
    """The vocabulary covers the ids of the inputs (a padding id above every label too),
    and a split with no counted token is one line (it divided by zero before)."""
    from distill.user_data import load_npz

    ids = np.array([[1, 2, 3, 9], [2, 3, 1, 9]])  # 9: padding, never a label
    labels = np.where(ids == 9, -100, ids)
    np.savez(tmp_path / "t.npz", x_train=ids, y_train=labels, x_test=ids, y_test=labels)
    assert load_npz(tmp_path / "t.npz").num_classes == 10
    np.savez(tmp_path / "pad.npz", x_train=ids, y_train=np.full_like(ids, -100), x_test=ids,
             y_test=labels)  # fmt: skip
    with pytest.raises(DistillInputError, match="no token is counted"):
        load_npz(tmp_path / "pad.npz")
