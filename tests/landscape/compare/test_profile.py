"""basin_width, the README's headline surface column, against hand-computed curves."""

import numpy as np
import pytest

from landscape.compare.profile import basin_width


def test_basin_width_interpolates_each_side_and_averages():
    alphas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    losses = np.array([1.0, 0.4, 0.2, 0.25, 0.7])
    # rise 0.1 -> threshold 0.3. Right: 0.25 at 0.5, 0.7 at 1.0 -> 0.5 + 0.5 * 0.05 / 0.45.
    # Left: 0.4 at -0.5 already crosses -> 0.5 * (0.3 - 0.2) / (0.4 - 0.2) = 0.25.
    right = 0.5 + 0.5 * (0.3 - 0.25) / (0.7 - 0.25)
    assert basin_width(alphas, losses, rise=0.1) == pytest.approx((right + 0.25) / 2, rel=1e-12)


def test_a_side_that_never_crosses_counts_as_the_grid_edge():
    alphas = np.linspace(-1, 1, 5)
    losses = np.array([0.5, 0.3, 0.0, 0.01, 0.02])  # right never rises by 0.1
    left = 0.5 * (0.1 - 0.0) / (0.3 - 0.0)  # crosses between 0 and -0.5
    assert basin_width(alphas, losses, rise=0.1) == pytest.approx((1.0 + left) / 2, rel=1e-12)


def test_a_diverged_point_counts_as_crossing_at_that_point():
    alphas = np.linspace(-1, 1, 5)
    losses = np.array([np.nan, 0.05, 0.0, np.inf, 5.0])
    assert basin_width(alphas, losses, rise=0.1) == pytest.approx((1.0 + 0.5) / 2, rel=1e-12)
