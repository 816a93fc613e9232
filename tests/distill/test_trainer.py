"""Trainer: determinism, stable KD at T=4, recipes, generations."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from distill.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from distill.data import load_dataset
from distill.losses import IGNORE_INDEX, KDConfig, causal_lm_loss
from distill.trainer import Recipe, evaluate, recipe_for_student, train_student, train_teacher
from tests.references import TINY_LM


def test_same_seed_same_bytes(tmp_path):
    bundle = load_dataset("synthetic")
    paths = []
    for name in ("a", "b"):
        model, meta = train_teacher(bundle, recipe=Recipe(epochs=3, lr=0.05), seed=7)
        paths.append(save_checkpoint(tmp_path / f"{name}.safetensors", model, meta))
    assert file_sha256(paths[0]) == file_sha256(paths[1])
    model, meta = train_teacher(bundle, recipe=Recipe(epochs=3, lr=0.05), seed=8)
    other = save_checkpoint(tmp_path / "c.safetensors", model, meta)
    assert file_sha256(other) != file_sha256(paths[0])


def test_default_kd_recipe_is_the_teachers_lr_over_4_with_warmup_and_trains(mnist1d_teacher):
    """The calibration saw KD at T=4, lr 0.1 collapse to chance; the default recipe avoids it.

    What is asserted is the mechanism (a quarter of the teacher's lr, reached after a 2-epoch
    linear warm-up) and that this recipe trains far above chance (0.1). How the unstable
    lr-0.1 run ends depends on the CPU's summation order, so it is not asserted.
    """
    _, parent = load_checkpoint(mnist1d_teacher)
    default = recipe_for_student(parent)
    assert default.lr == pytest.approx(parent["recipe"]["lr"] / 4) and default.warmup_epochs == 2
    assert default.lr_at(0) == pytest.approx(0.1 * default.lr)
    assert default.lr_at(0) < default.lr_at(1) < default.lr
    short = {"epochs": 6, "warmup_epochs": 2}
    _, stable = train_student(
        mnist1d_teacher, KDConfig(4.0, 1.0), recipe=Recipe(lr=default.lr, **short)
    )
    assert stable["metrics"]["test_accuracy"] > 0.4


def test_student_generation_chain(tmp_path, mnist1d_student):
    _, meta1 = load_checkpoint(mnist1d_student)
    model2, meta2 = train_student(
        mnist1d_student, KDConfig(4.0, 1.0), recipe=Recipe(epochs=1, lr=0.025)
    )
    assert meta2["generation"] == 2 and meta2["parent_sha256"] == file_sha256(mnist1d_student)
    assert meta2["seed"] == meta1["seed"] + 1
    # A student's student inherits the parent's recipe, not a further lr/4.
    assert recipe_for_student(meta1).lr == meta1["recipe"]["lr"]


def test_evaluate_is_exact_mean_over_examples():
    bundle = load_dataset("synthetic", n_test=37)
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    result = evaluate(model, bundle.test, batch_size=10)
    x, y = bundle.test.tensors
    with torch.no_grad():
        logits = model(x)
    assert result["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)), 1e-6
    )
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))


def test_schedules():
    cosine = Recipe(epochs=10, lr=1.0)
    assert cosine.lr_at(0) == 1.0 and cosine.lr_at(5) == pytest.approx(0.5)
    steps = Recipe(epochs=10, lr=1.0, schedule="multistep", milestones=(3, 6))
    assert [steps.lr_at(e) for e in (2, 3, 6)] == pytest.approx([1.0, 0.1, 0.01])
    warm = Recipe(epochs=10, lr=1.0, warmup_epochs=2)
    assert warm.lr_at(0) == pytest.approx(0.1) and warm.lr_at(1) == pytest.approx(0.55)


def test_evaluate_weights_a_token_loss_by_counted_tokens():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5)).double()
    tokens = torch.randint(0, 5, (5, 4))
    labels = tokens.clone()
    labels[0, 1:] = IGNORE_INDEX  # batches of 2, 2, 1 sequences count 3, 6, 3
    result = evaluate(model, TensorDataset(tokens, labels), batch_size=2, loss_fn=causal_lm_loss)
    with torch.no_grad():
        whole = float(causal_lm_loss(model(tokens), labels))
    assert result["loss"] == pytest.approx(whole, rel=1e-12) and result["n"] == 12
    with torch.no_grad():
        hits = causal_lm_loss.correct(model(tokens), labels)
    assert result["accuracy"] == hits / 12


def test_a_token_teacher_and_its_student_train_on_the_token_mean(tmp_path, monkeypatch):
    """The student's first epoch at a vanishing lr is the sequence-KD loss of one batch."""
    from distill.losses import sequence_kd_loss
    from distill.user_data import load_npz

    (tmp_path / "lm.py").write_text(TINY_LM)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (40, 6))
    y = x.copy()
    y[::3, 3:] = IGNORE_INDEX
    np.savez("tok.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    bundle = load_npz("tok.npz")
    recipe = Recipe(epochs=2, lr=0.5, batch_size=8)
    teacher, meta = train_teacher(bundle, arch="lm.py:TinyLM", recipe=recipe, loss="causal_lm")
    assert meta["loss"] == "causal_lm" and meta["metrics"]["train_loss"] < math.log(7)
    save_checkpoint("t.safetensors", teacher, meta)
    log = []
    kd = KDConfig(temperature=2.0, alpha=0.5)
    still = Recipe(epochs=1, lr=1e-30, momentum=0.0, batch_size=7)  # batches padded unequally
    student, meta = train_student(
        "t.safetensors", kd, still, named_model="lm.py:TinyLM", log=log.append
    )
    assert meta["loss"] == "causal_lm" and meta["kd"]["alpha"] == 0.5
    inputs, labels = bundle.train.tensors
    with torch.no_grad():
        whole = sequence_kd_loss(student(inputs), teacher(inputs), labels, kd)
    assert log[0]["loss"] == pytest.approx(float(whole), rel=1e-5)
