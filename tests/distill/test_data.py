"""Datasets: offline loaders, normalization, RNG hygiene, label noise, CIFAR batches."""

import pickle
import random

import numpy as np
import pytest
import torch

from distill.data import crop_flip, dataset_from_description, flip_labels, load_dataset
from distill.errors import DistillInputError


def test_mnist1d_shapes_and_train_normalization():
    bundle = load_dataset("mnist1d")
    x, y = bundle.train.tensors
    assert x.shape == (4000, 40) and y.shape == (4000,) and len(bundle.test) == 1000
    assert bundle.num_classes == 10 and bundle.input_shape == (40,)
    assert abs(float(x.double().mean())) < 1e-5
    assert float(x.double().std()) == pytest.approx(1.0, abs=1e-3)
    assert bundle.train_eval is bundle.train


def test_mnist1d_leaves_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    load_dataset("mnist1d")
    assert np.random.rand() == expected_np and random.random() == expected_py


def test_mnist1d_larger_test_set():
    bundle = load_dataset("mnist1d", test_size=3000)
    assert len(bundle.train) == 4000 and len(bundle.test) == 3000


def test_digits_split_and_shape():
    bundle = load_dataset("digits")
    assert bundle.input_shape == (1, 8, 8)
    assert len(bundle.train) + len(bundle.test) == 1797


def test_description_rebuilds_identical_data():
    bundle = load_dataset("synthetic", train_size=100, label_noise=0.1, noise_seed=3, seed=5)
    again = dataset_from_description(bundle.description)
    for a, b in zip(
        bundle.train.tensors + bundle.test.tensors,
        again.train.tensors + again.test.tensors,
        strict=True,
    ):
        assert torch.equal(a, b)


def test_label_noise_flips_exactly_the_recorded_fraction():
    labels = np.arange(1000) % 10
    noisy, flipped = flip_labels(labels, 0.2, 10, seed=0)
    assert flipped == 200 and int((noisy != labels).sum()) == 200
    assert noisy.min() >= 0 and noisy.max() <= 9
    clean = load_dataset("mnist1d")
    bundle = load_dataset("mnist1d", label_noise=0.4, noise_seed=1)
    changed = int((bundle.train.tensors[1] != clean.train.tensors[1]).sum())
    assert changed == bundle.description["noisy_labels"] == 1600
    assert torch.equal(bundle.test.tensors[1], clean.test.tensors[1])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("nope", {}), ("mnist1d", {"label_noise": 1.0}), ("mnist1d", {"train_size": 0}),
     ("mnist1d", {"bogus": 1}), ("cifar10", {})],
)  # fmt: skip
def test_bad_dataset_requests(name, kwargs):
    with pytest.raises(DistillInputError):
        load_dataset(name, **kwargs)


def _write_fake_cifar10(root, n=8):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, size=n)),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    return folder


def test_cifar10_reads_official_format(tmp_path):
    folder = _write_fake_cifar10(tmp_path)
    bundle = load_dataset("cifar10", root=str(tmp_path))
    x, y = bundle.train.tensors
    assert x.shape == (40, 3, 32, 32) and bundle.num_classes == 10
    with open(folder / "data_batch_1", "rb") as handle:
        raw = pickle.load(handle)
    first = raw[b"data"][0].reshape(3, 32, 32) / 255.0
    mean = np.array(bundle.description["normalization"]["mean"])[:, None, None]
    std = np.array(bundle.description["normalization"]["std"])[:, None, None]
    np.testing.assert_allclose(x[0].numpy(), (first - mean) / std, rtol=1e-5, atol=1e-5)
    assert int(y[0]) == raw[b"labels"][0]
    assert bundle.augment is not None


def test_cifar_root_without_batches(tmp_path):
    with pytest.raises(DistillInputError, match="batches missing"):
        load_dataset("cifar10", root=str(tmp_path))


class _Planted:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_batch_with_code_is_refused(tmp_path):
    folder = _write_fake_cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Planted(), b"labels": []}, handle)
    with pytest.raises(DistillInputError, match="not an official CIFAR"):
        load_dataset("cifar10", root=str(tmp_path))


def test_crop_flip_matches_per_image_reference():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 9, (2,), generator=g), torch.randint(0, 9, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        ref = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        torch.testing.assert_close(out[i], ref.flip(-1) if flip[i] else ref)


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("mnist1d", {"test_size": 10**9}, "test_size=1000000000: must be an int in [10, 100000]"),
        ("mnist1d", {"test_size": 5}, "test_size=5"),
        ("mnist1d", {"test_size": 1e3}, "test_size=1000.0: must be an int"),
        ("synthetic", {"n_train": -4}, "n_train=-4"),
        ("synthetic", {"n_train": 1_000_000, "dim": 10_000}, "at most 100,000,000"),
        ("digits", {"test_fraction": 1.0}, "test_fraction=1.0: must be a number in [0.01, 0.99]"),
        ("cifar10", {"seed": 1}, "dataset cifar10 has no option 'seed'"),
    ],
)
def test_dataset_options_have_types_and_caps(name, options, needle):
    with pytest.raises(DistillInputError) as caught:
        load_dataset(name, **options)
    assert needle in str(caught.value)


def _recorded_npz(tmp_path, path):
    from tests.distill.lying import lying

    def edit(header):
        header["dataset"] = {"name": "npz", "path": str(path), "sha256": "0" * 64, "options": {}}

    return lying(tmp_path / "lying.safetensors", edit)


@pytest.mark.parametrize("kind", ["fifo", "passwd", "missing", "folder"])
def test_a_recorded_data_path_is_named_as_the_header_s_and_never_blocks(tmp_path, kind):
    import os
    import signal

    from distill.sources import open_checkpoint

    target = {"fifo": tmp_path / "data.npz", "passwd": "/etc/passwd",
              "missing": tmp_path / "gone.npz", "folder": tmp_path}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(target)
    checkpoint = _recorded_npz(tmp_path, target)
    signal.alarm(20)  # opening the FIFO for reading would wait for a writer forever
    try:
        with pytest.raises(DistillInputError) as caught:
            open_checkpoint(checkpoint)
    finally:
        signal.alarm(0)
    message = str(caught.value)
    assert message.startswith(f"{checkpoint} header field dataset.path {target}: "), message
    expected = {
        "fifo": "a FIFO, not a regular file",
        "passwd": "changed since the checkpoint",
        "missing": "no such file",
        "folder": "a folder, not a regular file",
    }[kind]
    assert expected in message


def test_a_recorded_train_size_is_named_as_the_header_s(tmp_path):
    from distill.sources import open_checkpoint
    from tests.distill.lying import lying

    def edit(header):
        header["dataset"]["train_size"] = 10**6

    checkpoint = lying(tmp_path / "lying.safetensors", edit)
    with pytest.raises(DistillInputError, match="header field dataset.train_size 1000000: must"):
        open_checkpoint(checkpoint)
