"""Eigenvalue maps: lambda_max / lambda_min at grid points against dense float64 Hessians."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.surface.eigenmap import NeighbourStarts, eigen_map
from landscape.surface.evaluate import grid_points
from landscape.surface.plot import load_surface, plot_surfaces
from landscape.surface.store import SurfaceStore
from tests.landscape.surface_problems import classification_data, mlp, reference_loss

DATA = classification_data([48], (6,))


def _dense_spectrum(model: nn.Module, direction_pairs, point) -> tuple[torch.Tensor, float]:
    """Eigenvalues of the float64 Hessian at theta + a dx + b dy (jacfwd of grad)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([
        (p.detach() + sum(c * d[n] for c, d in zip(point, direction_pairs, strict=True)))
        .reshape(-1) for n, p in model.named_parameters()
    ])  # fmt: skip
    x, y = DATA[0]

    def loss(flat):
        parts = dict(zip(names, (c.view(s) for c, s in zip(flat.split(
            [s.numel() for s in shapes]), shapes, strict=True)), strict=True))  # fmt: skip
        return nn.functional.cross_entropy(torch.func.functional_call(model, parts, (x,)), y)

    hessian = torch.func.jacfwd(torch.func.grad(loss))(theta)
    return torch.linalg.eigvalsh(hessian), float(loss(theta))


def test_the_map_holds_the_extreme_eigenvalues_of_the_dense_hessian(tmp_path):
    model = mlp(0)
    out = tmp_path / "eig.h5"
    result = eigen_map(model, nn.functional.cross_entropy, DATA, out, x_range=(-1, 1, 3),
                       y_range=(-0.5, 0.5, 2), seed=3, tol=1e-4, max_memory=None)  # fmt: skip
    assert result.computed == result.points == 6 and result.converged == 6
    with SurfaceStore.read(out) as store:
        assert store.value_keys == ["lambda_max", "lambda_min", "train_loss"]
        directions = store.directions()
        values = dict(store.arrays)
        coords = grid_points(store.x, store.y)
    assert all(d["0.bias"].abs().max() == 0 for d in directions)  # biasbn, as surfaces
    for index in (0, 2, 4):
        spectrum, loss = _dense_spectrum(model, directions, coords[index])
        top, bottom = float(spectrum[-1]), float(spectrum[0])
        assert values["lambda_max"].reshape(-1)[index] == pytest.approx(top, rel=1e-3)
        assert abs(values["lambda_min"].reshape(-1)[index] - bottom) <= 2e-4 * abs(top)
        assert bottom < 0  # away from the minimum the Hessian is indefinite
        assert values["train_loss"].reshape(-1)[index] == pytest.approx(loss, rel=1e-10)
    centre_loss, _ = reference_loss(model, DATA, [])
    assert _dense_spectrum(model, directions, (0.0, 0.0))[1] == pytest.approx(centre_loss)

    surface = load_surface(out)
    ratio = np.abs(surface.values["lambda_min"] / surface.values["lambda_max"])
    assert surface.values["lambda_ratio"] == pytest.approx(ratio)
    figure = plot_surfaces([out], tmp_path / "ratio.png", kind="heatmap", key="lambda_ratio")
    assert figure.stat().st_size > 1000


@pytest.mark.parametrize("warm_start", [False, True])
def test_a_killed_map_resumes_to_the_same_values(tmp_path, warm_start):
    """Cold starts resume to the same bits; warm ones to the tolerance (the first point
    after the break starts cold: its neighbour's vectors died with the killed run)."""
    model = mlp(1)
    whole, part = tmp_path / "whole.h5", tmp_path / "part.h5"
    kwargs = {"x_range": (-1, 1, 3), "y_range": None, "seed": 0, "max_memory": None,
              "warm_start": warm_start, "tol": 1e-3}  # fmt: skip
    eigen_map(model, nn.functional.cross_entropy, DATA, whole, **kwargs)
    calls = []

    def stop_after_two(n):
        calls.append(n)
        if sum(calls) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        eigen_map(model, nn.functional.cross_entropy, DATA, part, progress=stop_after_two,
                  **kwargs)  # fmt: skip
    with SurfaceStore.read(part) as store:
        assert int(store.done.sum()) == 2
    again = eigen_map(model, nn.functional.cross_entropy, DATA, part, resume=True, **kwargs)
    assert again.computed == 1
    with SurfaceStore.read(whole) as a, SurfaceStore.read(part) as b:
        for key in a.value_keys:
            if warm_start and key != "train_loss":
                scale = np.abs(a.arrays["lambda_max"]).max()
                assert np.abs(a.arrays[key] - b.arrays[key]).max() <= 2e-3 * scale
            else:
                assert np.array_equal(a.arrays[key], b.arrays[key])


def test_maps_too_big_or_made_otherwise_are_refused(tmp_path):
    model = mlp(0)
    with pytest.raises(LandscapeInputError, match="more than 441"):
        eigen_map(model, nn.functional.cross_entropy, DATA, tmp_path / "big.h5",
                  x_range=(-1, 1, 22), y_range=(-1, 1, 21))  # fmt: skip
    assert not (tmp_path / "big.h5").exists()
    out = tmp_path / "eig.h5"
    eigen_map(model, nn.functional.cross_entropy, DATA, out, x_range=(-1, 1, 2), y_range=None)
    with pytest.raises(LandscapeInputError, match="other settings"):
        eigen_map(model, nn.functional.cross_entropy, DATA, out, x_range=(-1, 1, 2),
                  y_range=None, seed=9, resume=True)  # fmt: skip
    with pytest.raises(LandscapeInputError, match="exists"):
        eigen_map(model, nn.functional.cross_entropy, DATA, out, x_range=(-1, 1, 2), y_range=None)


def test_a_point_whose_loss_is_not_finite_is_a_gap_and_the_map_finishes(tmp_path):
    model = mlp(0)
    direction = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    direction["0.weight"].fill_(1e308)  # x = 2 overflows float64: the loss there is NaN
    out = tmp_path / "eig.h5"
    kwargs = {"x_range": (0, 2, 2), "y_range": None, "directions": [direction], "max_memory": None}
    result = eigen_map(model, nn.functional.cross_entropy, DATA, out, **kwargs)
    assert (result.computed, result.converged) == (2, 1)
    with SurfaceStore.read(out) as store:
        assert store.done.all()
        assert np.isfinite(store.arrays["lambda_max"][0]) and np.isnan(
            store.arrays["lambda_max"][1]
        )
        assert np.isnan(store.arrays["lambda_min"][1])
        assert not np.isfinite(store.arrays["train_loss"][1])
    again = eigen_map(model, nn.functional.cross_entropy, DATA, out, resume=True, **kwargs)
    assert again.computed == 0


def test_warm_starts_spend_fewer_products_for_the_same_values(tmp_path):
    """Each point from its neighbour's Ritz vectors: both maps within tol of the dense one."""
    model = mlp(0)
    grid = {"x_range": (-0.2, 0.2, 5), "y_range": (-0.1, 0.1, 3), "seed": 3, "tol": 1e-3,
            "max_memory": None}  # fmt: skip
    runs = {}
    for warm in (False, True):
        out = tmp_path / f"{warm}.h5"
        runs[warm] = eigen_map(model, nn.functional.cross_entropy, DATA, out, warm_start=warm,
                               **grid)  # fmt: skip
        with SurfaceStore.read(out) as store:
            runs[warm].values = dict(store.arrays)
            directions, coords = store.directions(), grid_points(store.x, store.y)
    assert runs[True].converged == runs[False].converged == 15
    assert runs[True].matvecs < runs[False].matvecs
    for index in range(15):
        spectrum, _ = _dense_spectrum(model, directions, coords[index])
        top = float(spectrum[-1])
        for warm in (False, True):
            assert runs[warm].values["lambda_max"].reshape(-1)[index] == pytest.approx(
                top, rel=1e-3
            )
            bottom = runs[warm].values["lambda_min"].reshape(-1)[index]
            assert abs(bottom - float(spectrum[0])) <= 1e-3 * abs(top)


def test_neighbour_starts_use_the_left_point_else_the_one_below():
    starts = NeighbourStarts(nx=3)
    vectors = {k: (torch.full((2, 1), float(k)), torch.zeros(2, 1)) for k in range(6)}
    assert starts.near(0) is None
    for k in range(4):
        starts.keep(k, vectors[k])
    assert starts.near(4)[0][0, 0] == 3.0  # left
    assert starts.near(3)[0][0, 0] == 0.0  # row start: below
    starts.keep(4, None)  # a diverged point has no vectors: the one below starts
    assert starts.near(5)[0][0, 0] == 2.0
    assert 0 not in starts.kept  # only the last nx points are kept
