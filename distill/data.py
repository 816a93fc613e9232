"""Datasets with their train/test split, normalization and augmentation, all offline.

Every dataset lives in memory as tensors. `load_dataset` returns a `DatasetBundle`
whose `description` is a JSON-able dict that goes into every checkpoint made from it,
and from which `dataset_from_description` rebuilds the very same bundle.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from distill.augment import mnist1d_augment
from distill.bundle import Augment, DatasetBundle
from distill.cache import cached_arrays
from distill.errors import DistillInputError
from distill.user_data import user_data_from_description


def _standardize(
    x_train: np.ndarray, x_test: np.ndarray, per_channel: bool = False
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Normalize both splits with the train split's mean and std (per channel for images)."""
    if per_channel:
        axes = (0,) + tuple(range(2, x_train.ndim))
        mean = x_train.mean(axis=axes, keepdims=True)
        std = x_train.std(axis=axes, keepdims=True)
        info = {"mean": mean.ravel().tolist(), "std": std.ravel().tolist(), "per": "channel"}
    else:
        mean, std = x_train.mean(), x_train.std()
        info = {"mean": float(mean), "std": float(std), "per": "dataset"}
    return (x_train - mean) / std, (x_test - mean) / std, info


def _tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def _mnist1d(seed: int = 42, test_size: int = 1000) -> tuple[np.ndarray, ...]:
    """MNIST-1D (4000 train examples; `test_size` for test), from the verified cache.

    Generated once per (seed, test_size, mnist1d version) by :func:`_make_mnist1d` and
    kept by :mod:`distill.cache`.
    """
    from importlib.metadata import version

    key = {"generator": "mnist1d", "version": version("mnist1d"), "seed": seed,
           "test_size": test_size}  # fmt: skip
    names = ("x_train", "y_train", "x_test", "y_test")
    return cached_arrays(key, names, lambda: _make_mnist1d(seed, test_size))


def _make_mnist1d(seed: int, test_size: int) -> tuple[np.ndarray, ...]:
    """MNIST-1D from its generative process.

    `mnist1d.data.make_dataset` reseeds Python's and numpy's global generators; their
    states are restored afterwards so that loading data never changes a user's RNG.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    n_train = 4000
    # make_dataset draws num_samples // 10 per class; keep the total a multiple of 10.
    total = n_train + int(np.ceil(test_size / 10) * 10)
    args.num_samples, args.train_split, args.seed = total, n_train / total, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return data["x"], data["y"], data["x_test"][:test_size], data["y_test"][:test_size]


def _digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled 8x8 digits, split by a seeded permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None, :, :] / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _synthetic(
    seed: int = 0,
    n_train: int = 512,
    n_test: int = 512,
    dim: int = 16,
    classes: int = 4,
    spread: float = 1.0,
) -> tuple[np.ndarray, ...]:
    """Seeded Gaussian clusters: one unit-variance blob per class around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, size=n)
        return centres[y] + spread * rng.normal(size=(n, dim)), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return x_train, y_train, x_test, y_test


def _tokens(
    seed: int = 0,
    n_train: int = 2048,
    n_test: int = 512,
    length: int = 32,
    vocab: int = 16,
    topics: int = 4,
) -> tuple[np.ndarray, ...]:
    """Seeded token sequences with long-range structure, for a language model.

    Each sequence opens with its topic (token ``0 .. topics - 1``); every next token is
    drawn from one of three successors of the previous token under that topic's sparse
    transition table. Predicting well needs the last token and the first one, however far
    back: an order-1 model is not enough, attention is. The labels are the sequences
    themselves (``--loss causal_lm`` shifts them).
    """
    if topics > vocab:
        raise DistillInputError(f"dataset tokens: topics {topics} must be at most vocab {vocab}")
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, size=(topics, vocab, 3))
    edges = np.cumsum(rng.dirichlet(np.ones(3), size=(topics, vocab)), axis=-1)

    def draw(n: int) -> np.ndarray:
        x = np.empty((n, length), dtype=np.int64)
        topic = rng.integers(0, topics, size=n)
        x[:, 0] = topic
        for t in range(1, length):
            choice = (rng.random(n)[:, None] > edges[topic, x[:, t - 1]]).sum(axis=1)
            x[:, t] = successors[topic, x[:, t - 1], np.minimum(choice, 2)]
        return x

    x_train, x_test = draw(n_train), draw(n_test)
    return x_train, x_train.copy(), x_test, x_test.copy()


class _CifarUnpickler(pickle.Unpickler):
    """Reads the official CIFAR python batches and nothing else.

    The batches are pickles of dicts of bytes, lists and numpy arrays; any other global
    a file asks for is refused, so a planted file cannot run code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as err:
        raise DistillInputError(f"{path}: not an official CIFAR python batch ({err})") from err
    return data, labels


def _cifar(root: str | None, classes: int, flag: str = "--data-root") -> tuple[np.ndarray, ...]:
    """CIFAR-10/100 from the official python batches under `root` (never downloaded).

    ``flag`` names where `root` came from in messages (a checkpoint header's field).
    """
    if root is None:
        raise DistillInputError(f"cifar{classes} needs --data-root pointing at the python batches")
    sub = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    base = Path(root)
    if (base / sub).is_dir():
        base = base / sub
    if classes == 10:
        train_files = [base / f"data_batch_{i}" for i in range(1, 6)]
        test_files, key = [base / "test_batch"], b"labels"
    else:
        train_files, test_files, key = [base / "train"], [base / "test"], b"fine_labels"
    missing = [p.name for p in train_files + test_files if not p.is_file()]
    if missing:
        raise DistillInputError(
            f"{flag} {root}: CIFAR-{classes} batches missing ({', '.join(missing)}); "
            f"download the python version yourself and point --data-root at it"
        )
    parts = [_read_cifar_batch(p, key) for p in train_files]
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_cifar_batch(test_files[0], key)
    return x_train, y_train, x_test.astype(np.float32) / 255.0, y_test


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image, seeded."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    out = padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(x.shape[1])[None, :, None, None],
        rows,
        cols,
    ]
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def flip_labels(labels: np.ndarray, rate: float, classes: int, seed: int) -> tuple[np.ndarray, int]:
    """Symmetric label noise: exactly round(rate * n) labels moved to another class."""
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(labels)))
    chosen = rng.choice(len(labels), size=n_flip, replace=False)
    shift = rng.integers(1, classes, size=n_flip)
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + shift) % classes
    return noisy, n_flip


DATASETS = ("mnist1d", "digits", "synthetic", "tokens", "cifar10", "cifar100")
SEED_MAX = 2**32 - 1  # numpy's legacy seeding (MNIST-1D) takes no more
# Every option of a generated dataset: (kind, lowest, highest). The caps keep a request
# (or a checkpoint header that lies) from generating for minutes or gigabytes.
OPTIONS: dict[str, dict[str, tuple[type, float, float]]] = {
    "mnist1d": {"seed": (int, 0, SEED_MAX), "test_size": (int, 10, 100_000)},
    "digits": {"seed": (int, 0, SEED_MAX), "test_fraction": (float, 0.01, 0.99)},
    "synthetic": {
        "seed": (int, 0, SEED_MAX),
        "n_train": (int, 1, 1_000_000),
        "n_test": (int, 1, 1_000_000),
        "dim": (int, 1, 10_000),
        "classes": (int, 1, 1000),
        "spread": (float, 0.0, 1e6),
    },
    "tokens": {
        "seed": (int, 0, SEED_MAX),
        "n_train": (int, 1, 200_000),
        "n_test": (int, 1, 200_000),
        "length": (int, 2, 1024),
        "vocab": (int, 2, 4096),
        "topics": (int, 1, 4096),
    },  # fmt: skip
}
TOKEN_VALUES = 10**8  # sequences x length per split
SYNTHETIC_VALUES = 10**8  # examples x dim per split (800 MB of float64)


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an option ``name`` does not take, of the wrong type or beyond its cap.

    Raises:
        DistillInputError: The message names the option and its accepted range.
    """
    accepted = OPTIONS.get(name, {})
    for key, value in options.items():
        if key not in accepted:
            known = ", ".join(accepted) or "none"
            raise DistillInputError(f"dataset {name} has no option {key!r} (options: {known})")
        kind, low, high = accepted[key]
        exact = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not exact or not low <= value <= high:
            what = "an int" if kind is int else "a number"
            raise DistillInputError(
                f"dataset {name} option {key}={value!r}: must be {what} in [{low}, {high}]"
            )
    if name == "tokens":
        length = options.get("length", 32)
        for split, default in (("n_train", 2048), ("n_test", 512)):
            if options.get(split, default) * length > TOKEN_VALUES:
                raise DistillInputError(
                    f"dataset tokens: {split} x length = {options.get(split, default) * length}"
                    f" tokens; at most {TOKEN_VALUES:,} per split"
                )
    if name == "synthetic":
        dim = options.get("dim", 16)
        for split, default in (("n_train", 512), ("n_test", 512)):
            if options.get(split, default) * dim > SYNTHETIC_VALUES:
                raise DistillInputError(
                    f"dataset synthetic: {split} x dim = {options.get(split, default) * dim} "
                    f"values; at most {SYNTHETIC_VALUES:,} per split"
                )


def _flag(flag: str, field: str, origin: str | None) -> str:
    """How a message names a setting: the user's flag, or the field of a checkpoint header."""
    return flag if origin is None else f"{origin} field dataset.{field}"


def _raw(
    name: str, root: str | None, options: dict[str, Any], origin: str | None = None
) -> tuple[np.ndarray, ...]:
    check_options(name, options)
    try:
        if name == "mnist1d":
            return _mnist1d(**options)
        if name == "digits":
            return _digits(**options)
        if name == "synthetic":
            return _synthetic(**options)
        if name == "tokens":
            return _tokens(**options)
    except TypeError as err:
        raise DistillInputError(f"dataset {name}: {err}") from err
    if options:
        raise DistillInputError(f"dataset {name} takes no options, got {sorted(options)}")
    return _cifar(root, 10 if name == "cifar10" else 100, _flag("--data-root", "root", origin))


def load_dataset(
    name: str,
    root: str | None = None,
    train_size: int | None = None,
    label_noise: float = 0.0,
    noise_seed: int = 0,
    augment: bool = False,
    origin: str | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load a dataset by name, normalized with train statistics.

    Args:
        name: one of `DATASETS`.
        root: folder holding the CIFAR python batches (CIFAR only).
        train_size: keep only the first `train_size` training examples.
        label_noise: fraction of training labels flipped to another class (symmetric
            noise), chosen by `noise_seed`; the test split is never noised.
        noise_seed: seed of the label-noise draw.
        augment: MNIST-1D only: fresh random shifts, scaling, shear and noise from
            MNIST-1D's own generative process on every training batch
            (`distill.augment`). CIFAR is always augmented (random crop + flip).
        origin: where these settings come from when not from the user's flags (``"X
            header"``: a checkpoint's), so that messages name its fields.
        **options: dataset-specific options (e.g. ``seed``, ``test_size`` for mnist1d),
            within the caps of `OPTIONS`.

    Returns:
        The bundle; its `description` rebuilds it via `dataset_from_description`.
    """
    if name not in DATASETS:
        raise DistillInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0.0 <= label_noise < 1.0:
        raise DistillInputError(
            f"{_flag('--label-noise', 'label_noise', origin)} {label_noise}: must lie in [0, 1)"
        )
    x_train, y_train, x_test, y_test = _raw(name, root, dict(options), origin)
    if name == "tokens":
        return _token_bundle(x_train, x_test, options, train_size, label_noise, augment, origin)
    if train_size is not None:
        if not 1 <= train_size <= len(y_train):
            raise DistillInputError(
                f"{_flag('--train-size', 'train_size', origin)} {train_size}: must lie in "
                f"[1, {len(y_train)}] for {name}"
            )
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    classes = int(max(y_train.max(), y_test.max()) + 1)
    if name == "cifar100":
        classes = 100
    elif name == "cifar10":
        classes = 10
    n_flipped = 0
    if label_noise > 0:
        y_train, n_flipped = flip_labels(y_train, label_noise, classes, noise_seed)
    image = name.startswith("cifar")
    if augment and name != "mnist1d":
        raise DistillInputError(
            f"{_flag('--augment', 'augment', origin)}: only mnist1d has an optional "
            f"augmentation ({name})"
        )
    x_train, x_test, norm = _standardize(x_train, x_test, per_channel=image)
    augmentation: Augment | None = crop_flip if image else None
    if augment:
        augmentation = mnist1d_augment(norm)
    description = {
        "name": name,
        "root": root,
        "options": dict(options),
        "train_size": train_size,
        "label_noise": label_noise,
        "noise_seed": noise_seed,
        "noisy_labels": n_flipped,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "num_classes": classes,
        "normalization": norm,
        "augment": augment,
        "augmentation": (
            augmentation.describe()
            if augment
            else "random crop (pad 4) + horizontal flip, train only"
            if image
            else None
        ),
    }
    return DatasetBundle(
        train=_tensors(x_train, y_train),
        test=_tensors(x_test, y_test),
        num_classes=classes,
        input_shape=tuple(x_train.shape[1:]),
        description=description,
        augment=augmentation,
        noisy_labels=n_flipped,
    )


def _token_bundle(
    x_train: np.ndarray,
    x_test: np.ndarray,
    options: dict[str, Any],
    train_size: int | None,
    label_noise: float,
    augment: bool,
    origin: str | None,
) -> DatasetBundle:
    """The ``tokens`` dataset: integer ids, the sequences themselves as labels, no scaling."""
    if label_noise or augment:
        flag = "--label-noise" if label_noise else "--augment"
        raise DistillInputError(
            f"{_flag(flag, flag[2:].replace('-', '_'), origin)}: "
            "the tokens dataset has neither label noise nor augmentation"
        )
    if train_size is not None:
        if not 1 <= train_size <= len(x_train):
            raise DistillInputError(
                f"{_flag('--train-size', 'train_size', origin)} "
                f"{train_size}: must lie in [1, {len(x_train)}] for tokens"
            )
        x_train = x_train[:train_size]
    vocab = int(options.get("vocab", 16))
    description = {
        "name": "tokens", "root": None, "options": dict(options), "train_size": train_size,
        "label_noise": 0.0, "noise_seed": 0, "noisy_labels": 0, "n_train": len(x_train),
        "n_test": len(x_test), "num_classes": vocab, "normalization": None, "augment": False,
        "augmentation": None,
    }  # fmt: skip
    train, test = (torch.from_numpy(np.ascontiguousarray(x)) for x in (x_train, x_test))
    return DatasetBundle(
        train=TensorDataset(train, train.clone()),
        test=TensorDataset(test, test.clone()),
        num_classes=vocab,
        input_shape=tuple(x_train.shape[1:]),
        description=description,
    )


def dataset_from_description(
    description: dict[str, Any],
    data_spec: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    origin: str | None = None,
) -> DatasetBundle:
    """Rebuild the bundle recorded in a checkpoint's metadata.

    A user's ``.npz`` is read again from its recorded path (and must still have its
    SHA-256); a user's data code is called only when the user names it again
    (``data_spec``, :mod:`distill.user_data`). ``origin`` (``"X header"``) names the
    checkpoint in messages about recorded settings, which the user never typed.
    """
    if description.get("name") in ("npz", "code"):
        return user_data_from_description(description, data_spec, data_kwargs, origin)
    try:
        return load_dataset(
            description["name"],
            root=description.get("root"),
            train_size=description.get("train_size"),
            label_noise=description.get("label_noise", 0.0),
            noise_seed=description.get("noise_seed", 0),
            augment=description.get("augment", False),
            origin=origin,
            **(description.get("options") or {}),
        )
    except KeyError as err:
        raise DistillInputError(f"checkpoint dataset description lacks {err}") from err
