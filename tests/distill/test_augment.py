"""MNIST-1D augmentation: reproducible, the generator's noise process, label-preserving parts."""

import numpy as np
import pytest
import torch
from mnist1d.transform import interpolate
from scipy.ndimage import gaussian_filter

from distill.augment import GRID, MNIST1DAugment, mnist1d_augment, noise_matrices
from distill.data import load_dataset
from distill.errors import DistillInputError

NONE = {"scale_coeff": 0.0, "corr_noise_scale": 0.0, "iid_noise_scale": 0.0, "shear_scale": 0.0}


def _batch(n=16, seed=0):
    return torch.randn(n, 40, generator=torch.Generator().manual_seed(seed))


def test_same_generator_seed_same_batch_and_input_untouched():
    augment = MNIST1DAugment(mean=0.1, std=0.7)
    x = _batch()
    before = x.clone()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(x, before)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_nothing_drawn_is_the_identity():
    augment = MNIST1DAugment(mean=0.3, std=0.5, max_shift=0, **NONE)
    x = _batch()
    torch.testing.assert_close(augment(x, torch.Generator().manual_seed(0)), x)


def test_shift_is_a_circular_roll_within_range():
    augment = MNIST1DAugment(mean=0.0, std=1.0, max_shift=3, **NONE)
    x = _batch(64).double()
    out = augment(x, torch.Generator().manual_seed(1))
    shifts = []
    for row_in, row_out in zip(x, out, strict=True):
        found = [k for k in range(-3, 4) if torch.allclose(torch.roll(row_in, k), row_out)]
        assert len(found) == 1
        shifts.append(found[0])
    assert set(shifts) == set(range(-3, 4))  # every shift drawn in 64 examples


def test_scale_and_shear_in_raw_units():
    augment = MNIST1DAugment(mean=0.2, std=0.5, max_shift=0, **{**NONE, "scale_coeff": 0.4})
    x = _batch(200).double()
    raw_in, raw_out = x * 0.5 + 0.2, augment(x, torch.Generator().manual_seed(0)) * 0.5 + 0.2
    ratio = raw_out / raw_in
    assert torch.allclose(ratio, ratio[:, :1]) and ratio.min() >= 0.8 and ratio.max() <= 1.2
    shear = MNIST1DAugment(mean=0.2, std=0.5, max_shift=0, **{**NONE, "shear_scale": 0.75})
    trend = (shear(x, torch.Generator().manual_seed(0)) - x) * 0.5
    slopes = (trend[:, 0] - trend[:, -1]).abs()  # |coeff| * (1/2 - (-1/2))
    assert torch.allclose(trend[:, 1:] - trend[:, :-1], (trend[:, 1] - trend[:, 0])[:, None])
    assert slopes.max() <= 0.375 + 1e-12 and slopes.max() > 0.3


def test_noise_maps_are_mnist1d_filter_then_resampling():
    correlated, iid = noise_matrices(40)
    for i in (0, 5, 36, GRID - 1):
        e = np.eye(GRID)[i]
        np.testing.assert_allclose(correlated[:, i].numpy(), interpolate(gaussian_filter(e, 2), 40))
        np.testing.assert_allclose(iid[:, i].numpy(), interpolate(e, 40))


def test_noise_only_has_the_expected_spread():
    options = {**NONE, "corr_noise_scale": 0.25, "iid_noise_scale": 0.02}
    augment = MNIST1DAugment(mean=0.0, std=1.0, max_shift=0, **options)
    x = torch.zeros(4000, 40, dtype=torch.float64)
    noise = augment(x, torch.Generator().manual_seed(0))
    correlated, iid = noise_matrices(40)
    expected = 0.25**2 * correlated @ correlated.T + 0.02**2 * iid @ iid.T
    torch.testing.assert_close(noise.T @ noise / 4000, expected, atol=4e-3, rtol=0)


def test_built_from_the_dataset_normalization():
    bundle = load_dataset("synthetic", n_train=8, n_test=8)
    augment = mnist1d_augment(bundle.description["normalization"], max_shift=2)
    assert augment.describe()["max_shift"] == 2 and augment.describe()["name"] == "mnist1d"
    with pytest.raises(DistillInputError):
        mnist1d_augment({"mean": [0.0], "std": [1.0], "per": "channel"})
    with pytest.raises(DistillInputError):
        mnist1d_augment(bundle.description["normalization"], bogus=1)
    with pytest.raises(DistillInputError):
        MNIST1DAugment(mean=0.0, std=0.0)
