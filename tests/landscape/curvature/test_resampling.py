"""Curvature over resampled data: the subsets, each value against a direct measurement."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from landscape.curvature.measure import CurvatureRequest
from landscape.curvature.model import model_curvature
from landscape.curvature.resampling import exceeds_spread, resampled_curvature, subset_indices
from landscape.errors import LandscapeInputError


def test_disjoint_subsets_are_disjoint_and_bootstrap_repeats():
    subsets = subset_indices(100, 4, 25, bootstrap=False, seed=3)
    assert sorted(torch.cat(subsets).tolist()) == list(range(100))
    assert [s.tolist() for s in subsets] == [
        s.tolist() for s in subset_indices(100, 4, 25, bootstrap=False, seed=3)]  # fmt: skip
    boot = subset_indices(100, 3, 100, bootstrap=True, seed=3)
    assert all(len(set(s.tolist())) < 100 for s in boot)  # with replacement


@pytest.mark.parametrize(
    ("args", "needle"),
    [((100, 5, 25, False), "125 disjoint examples, but the data has 100"),
     ((100, 1, 25, False), "at least 2"), ((100, 3, 101, True), "larger than the 100")],
)  # fmt: skip
def test_impossible_resampling_is_a_user_error(args, needle):
    with pytest.raises(LandscapeInputError, match=needle):
        subset_indices(*args, seed=0)


def test_each_value_is_the_curvature_of_its_subset():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(120, 5, dtype=torch.float64), torch.randint(0, 3, (120,))
    request = CurvatureRequest(top_k=2, trace=True, trace_matvecs=200, tol=1e-9)
    report = resampled_curvature(model, nn.functional.cross_entropy, [(x[:70], y[:70]),
                                 (x[70:], y[70:])], request, resamples=3, resample_size=40,
                                 seed=5, max_memory=None)  # fmt: skip
    subsets = subset_indices(120, 3, 40, bootstrap=False, seed=5)
    for r, index in enumerate(subsets):
        direct = model_curvature(model, nn.functional.cross_entropy, [(x[index], y[index])],
                                 top_k=2, trace=True, trace_matvecs=200, tol=1e-9, seed=r,
                                 max_memory=None)  # fmt: skip
        assert report["eigenvalues"][0]["values"][r] == pytest.approx(direct.eigenvalues[0],
                                                                       rel=1e-8)  # fmt: skip
        assert report["trace"]["values"][r] == pytest.approx(direct.trace.estimate, rel=1e-8)
    first = report["eigenvalues"][0]
    assert first["mean"] == pytest.approx(statistics.fmean(first["values"]))
    assert first["std"] == pytest.approx(statistics.stdev(first["values"])) and first["std"] > 0
    assert report["probe_seeds"] == [0, 1, 2] and report["examples"] == 120


def test_exceeds_spread_pairs_the_subsets():
    a = {"mean": 2.0, "std": 0.5, "values": [1.5, 2.0, 2.5]}
    shifted = {"mean": 3.0, "std": 0.5, "values": [2.5, 3.0, 3.5]}  # same shape: d = -1 always
    noisy = {"mean": 2.2, "std": 0.8, "values": [1.4, 3.0, 2.2]}
    assert exceeds_spread(a, {**shifted, "values": [2.5, 3.0, 3.6]})
    assert not exceeds_spread(a, noisy)
