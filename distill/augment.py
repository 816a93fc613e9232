"""MNIST-1D augmentation: fresh draws of the dataset's own nuisance transformations.

MNIST-1D (Greydanus & Steinbach) makes each example from a digit template by padding,
scaling, a circular translation, correlated background noise, iid noise and a shear,
then resamples the 72-sample signal to 40 samples (`mnist1d.transform.transform`). The
stored examples have these nuisances baked in; `MNIST1DAugment` draws new ones on top,
per example and per epoch, applied to the standardized 40-sample signals:

1. scale: ``x *= 1 + scale_coeff * (u - 1/2)``, ``u ~ U(0, 1)``;
2. translation: circular shift by an integer in ``[-max_shift, max_shift]``;
3. noise: ``resample(gaussian_filter(corr_noise_scale * z1, 2) + iid_noise_scale * z2)``
   with ``z1, z2 ~ N(0, I)`` on the generator's 72-sample grid, resampled to the signal
   length by the same linear interpolation (so it has MNIST-1D's correlation length);
4. shear: ``x -= shear_scale * (u - 1/2) * linspace(-1/2, 1/2, length)``.

The defaults are the generator's own (`mnist1d.data.get_dataset_args`), except the
translation (the generator's range, 48 of 72 samples, moves the digit anywhere; the
shift here is smaller, and circular like the generator's). One deviation: the generator
puts correlated noise only where the padded signal is zero; that region is unknown after
the fact, so here the noise is added everywhere.

The work happens in raw signal units, ``x_raw = x * std + mean`` with the dataset's
standardization, and the result is standardized again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from distill.errors import DistillInputError

GRID = 72  # template_len + padding[-1] of MNIST-1D's generator
SMOOTHING = 2.0  # sigma of the correlated noise, in grid samples


def resample_matrix(source: int, target: int) -> np.ndarray:
    """``(target, source)`` linear interpolation between evenly spaced grids on [0, 1].

    Row ``i`` reproduces `mnist1d.transform.interpolate` at ``linspace(0, 1, target)[i]``.
    """
    positions = np.linspace(0, 1, target) * (source - 1)
    low = np.clip(np.floor(positions).astype(int), 0, source - 2)
    frac = positions - low
    matrix = np.zeros((target, source))
    matrix[np.arange(target), low] = 1 - frac
    matrix[np.arange(target), low + 1] = frac
    return matrix


def noise_matrices(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps from grid noise ``z1``, ``z2`` to the correlated and iid noise at ``length``."""
    resample = resample_matrix(GRID, length)
    smooth = np.stack([gaussian_filter(e, SMOOTHING) for e in np.eye(GRID)], axis=1)
    return torch.from_numpy(resample @ smooth), torch.from_numpy(resample)


@dataclass(frozen=True)
class MNIST1DAugment:
    """An ``Augment`` (``(batch, generator) -> batch``) for standardized MNIST-1D signals.

    Attributes:
        mean: Mean of the raw signals (the dataset's standardization).
        std: Their standard deviation.
        max_shift: Largest circular shift, in samples of the stored signal.
        scale_coeff: Width of the multiplicative scale draw around 1.
        corr_noise_scale: Scale of the correlated noise (before smoothing).
        iid_noise_scale: Scale of the iid noise.
        shear_scale: Width of the shear-slope draw around 0.
    """

    mean: float
    std: float
    max_shift: int = 4
    scale_coeff: float = 0.4
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 0.02
    shear_scale: float = 0.75
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        scales = (self.scale_coeff, self.corr_noise_scale, self.iid_noise_scale, self.shear_scale)
        if not self.std > 0 or self.max_shift < 0 or min(scales) < 0:
            raise DistillInputError(
                f"MNIST-1D augmentation: std must be > 0 and shift/scales >= 0, got {self}"
            )

    def describe(self) -> dict[str, Any]:
        """JSON-able settings for checkpoint metadata."""
        return {
            "name": "mnist1d",
            **{f.name: getattr(self, f.name) for f in fields(self) if f.init},
        }

    def _matrices(self, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (length, dtype)
        if key not in self._cache:
            self._cache[key] = tuple(m.to(dtype) for m in noise_matrices(length))
        return self._cache[key]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch of shape ``(n, length)`` or ``(n, 1, length)``; returns a new tensor."""
        shape, n, length = x.shape, x.shape[0], x.shape[-1]
        raw = x.reshape(n, length).double() * self.std + self.mean
        scale = 1 + self.scale_coeff * (
            torch.rand(n, generator=generator, dtype=torch.float64) - 0.5
        )
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n,), generator=generator)
        slope = self.shear_scale * (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5)
        z1 = torch.randn(n, GRID, generator=generator, dtype=torch.float64)
        z2 = torch.randn(n, GRID, generator=generator, dtype=torch.float64)

        raw = raw * scale[:, None]
        index = (torch.arange(length)[None, :] - shift[:, None]) % length
        raw = torch.gather(raw, 1, index)  # out[i, j] = raw[i, j - shift_i]: a circular roll
        correlated, iid = self._matrices(length, torch.float64)
        raw = raw + self.corr_noise_scale * z1 @ correlated.T + self.iid_noise_scale * z2 @ iid.T
        raw = raw - slope[:, None] * torch.linspace(-0.5, 0.5, length, dtype=torch.float64)
        return ((raw - self.mean) / self.std).to(x.dtype).reshape(shape)


def mnist1d_augment(normalization: dict[str, Any], **options: Any) -> MNIST1DAugment:
    """The augmentation for a dataset standardized as recorded in ``description["normalization"]``.

    Args:
        normalization: ``{"mean": float, "std": float, "per": "dataset"}``.
        **options: Overrides of the `MNIST1DAugment` defaults (e.g. ``max_shift``).
    """
    if normalization.get("per") != "dataset":
        raise DistillInputError("MNIST-1D augmentation needs one dataset-wide mean and std")
    try:
        return MNIST1DAugment(float(normalization["mean"]), float(normalization["std"]), **options)
    except TypeError as err:
        raise DistillInputError(f"MNIST-1D augmentation: {err}") from err
