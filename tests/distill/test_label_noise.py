"""Symmetric label noise flips exactly the recorded number of labels, for any rate and size."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.data import dataset_from_description, flip_labels, load_dataset


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    classes=st.integers(2, 12),
    rate=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**31 - 1),
)
def test_flip_labels_changes_exactly_round_rate_n(n, classes, rate, seed):
    labels = np.random.default_rng(seed).integers(0, classes, size=n)
    noisy, flipped = flip_labels(labels, rate, classes, seed)
    assert flipped == int(round(rate * n))
    assert int((noisy != labels).sum()) == flipped  # every chosen label really moves
    assert noisy.min() >= 0 and noisy.max() < classes
    again, _ = flip_labels(labels, rate, classes, seed)
    assert np.array_equal(noisy, again)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_load_dataset_records_the_flipped_count(rate):
    clean = load_dataset("synthetic", n_train=250, classes=5)
    noisy = load_dataset("synthetic", n_train=250, classes=5, label_noise=rate, noise_seed=7)
    changed = int((noisy.train.tensors[1] != clean.train.tensors[1]).sum())
    description = noisy.description
    assert changed == description["noisy_labels"] == noisy.noisy_labels == round(rate * 250)
    assert description["label_noise"] == rate and description["noise_seed"] == 7
    rebuilt = dataset_from_description(description)
    assert torch.equal(rebuilt.train.tensors[1], noisy.train.tensors[1])
    assert torch.equal(noisy.test.tensors[1], clean.test.tensors[1])
