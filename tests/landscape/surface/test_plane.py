"""Planes through checkpoints and along trajectories: geometry, values at the models, PCA."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.surface.loss_surface import loss_surface
from landscape.surface.plane import auto_axis, checkpoint_plane, trajectory_plane
from landscape.surface.plot import load_surface, plot_surfaces
from landscape.surface.store import SurfaceStore
from tests.landscape.surface_problems import classification_data, cnn_batchnorm, reference_loss

DATA = classification_data([40, 24], (1, 6))


def _moved(model: nn.Module, seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A state dict near ``model``'s: every float parameter and buffer moved at random."""
    generator = torch.Generator().manual_seed(seed)
    state = copy.deepcopy(model.state_dict())
    for name, tensor in state.items():
        if tensor.is_floating_point():
            step = scale * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            state[name] = tensor + (step.abs() if "running_var" in name else step)
    return state


def _flat(direction: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([direction[name].reshape(-1) for name in sorted(direction)])


def _loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other


def test_the_plane_holds_the_three_models_exactly_and_its_axes_are_orthonormal(tmp_path):
    model = cnn_batchnorm(0)
    state_b, state_c = _moved(model, 1), _moved(model, 2)
    plane = checkpoint_plane(model, state_b, state_c, labels=("a", "b", "c"))

    ex, ey = (_flat(d) for d in plane.directions)
    assert float(ex @ ex) == pytest.approx(1, abs=1e-12)
    assert float(ey @ ey) == pytest.approx(1, abs=1e-12)
    assert abs(float(ex @ ey)) < 1e-12
    assert plane.coordinates[0].tolist() == [0.0, 0.0] and plane.coordinates[1, 1] == 0.0
    assert plane.off_plane.max() < 1e-10
    theta = model.state_dict()
    for (x, y), state in zip(plane.coordinates[1:], (state_b, state_c), strict=True):
        for name in plane.directions[0]:
            rebuilt = theta[name] + x * plane.directions[0][name] + y * plane.directions[1][name]
            torch.testing.assert_close(rebuilt, state[name], rtol=0, atol=1e-12)
    # BatchNorm statistics are on the axes too, so each mark *is* the model
    assert any("running_var" in name for name in plane.directions[0])

    out = tmp_path / "plane.h5"
    data = {"train": DATA}
    loss_surface(model, nn.functional.cross_entropy, data, out, x_range=(-1, 1, 3),
                 y_range=(-1, 1, 3), plane=plane, batch_size=16)  # fmt: skip
    with SurfaceStore.read(out) as store:
        marks = store.extra("marks")
        assert store.attrs["plane_norm_b"] == pytest.approx(plane.coordinates[1, 0])
    assert marks["labels"].tolist() == ["a", "b", "c"]
    for kind in ("contour", "heatmap", "surface3d"):  # the models marked on every kind
        figure = plot_surfaces([out], tmp_path / f"{kind}.png", kind=kind)
        assert figure.stat().st_size > 1000
    for n, state in enumerate((model.state_dict(), state_b, state_c)):
        loss, acc = reference_loss(_loaded(model, state), DATA, [])
        assert marks["train_loss"][n] == pytest.approx(loss, rel=1e-10)
        assert marks["train_acc"][n] == pytest.approx(acc, abs=1e-9)


def test_a_filter_normalized_plane_projects_the_models_and_says_how_far_off_they_are():
    model = cnn_batchnorm(0)
    state_b, state_c = _moved(model, 1), _moved(model, 2)
    plane = checkpoint_plane(model, state_b, state_c, normalization="filter")

    names = list(plane.directions[0])
    assert all("running" not in name for name in names)  # parameters only
    basis = np.stack([_flat(d).numpy() for d in plane.directions], axis=1)
    theta = model.state_dict()
    for n, state in enumerate((state_b, state_c), start=1):
        diff = torch.cat([(state[k] - theta[k]).reshape(-1) for k in sorted(names)]).numpy()
        coords, *_ = np.linalg.lstsq(basis, diff, rcond=None)
        assert plane.coordinates[n] == pytest.approx(coords, rel=1e-8)
        assert plane.off_plane[n] == pytest.approx(np.linalg.norm(diff - basis @ coords), rel=1e-8)
        assert plane.off_plane[n] > 0.1  # filter-normalized axes do not reach the models


def test_degenerate_planes_and_other_architectures_are_refused():
    model = cnn_batchnorm(0)
    state_b = _moved(model, 1)
    line = {k: 2 * v - model.state_dict()[k] for k, v in state_b.items()}  # on the line AB
    with pytest.raises(LandscapeInputError, match="three different models"):
        checkpoint_plane(model, model.state_dict(), state_b)
    with pytest.raises(LandscapeInputError, match="degenerate plane"):
        checkpoint_plane(model, state_b, line)
    other = nn.Sequential(nn.Conv1d(1, 5, 3, padding=1)).double().state_dict()
    with pytest.raises(LandscapeInputError, match="one architecture"):
        checkpoint_plane(model, state_b, other)


def _trajectory(model: nn.Module, seed: int, steps: int) -> list[dict[str, torch.Tensor]]:
    """Snapshots drifting towards ``model``'s weights (the last one is the model)."""
    start = _moved(model, seed, scale=1.0)
    bend = _moved(model, seed + 100, scale=0.5)
    theta = model.state_dict()
    states = []
    for t in np.linspace(0, 1, steps):
        states.append({
            k: (1 - t) * start[k] + t * theta[k] + t * (1 - t) * (bend[k] - theta[k])
            for k in theta
        })  # fmt: skip
    return states


def test_pca_directions_are_numpys_svd_and_the_path_ends_at_the_origin(tmp_path):
    model = cnn_batchnorm(3)
    teacher_run = _trajectory(cnn_batchnorm(4), 5, 6)
    student_run = _trajectory(model, 6, 5)
    plane = trajectory_plane(model, {"teacher": teacher_run, "student": student_run},
                             {"student": [0, 1, 2, 3, 4]})  # fmt: skip

    names = [n for n, _ in model.named_parameters()]
    theta = dict(model.named_parameters())
    rows = np.stack([
        torch.cat([(s[k] - theta[k].detach()).reshape(-1) for k in names]).numpy()
        for s in teacher_run + student_run
    ])  # fmt: skip
    centred = rows - rows.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    axes = [torch.cat([d[k].reshape(-1) for k in names]).numpy() for d in plane.directions]
    for k in range(2):
        assert abs(float(axes[k] @ vt[k])) == pytest.approx(1.0, abs=1e-10)
    ratio = singular[:2] ** 2 / (singular**2).sum()
    assert plane.attrs["pca_explained_ratio_x"] == pytest.approx(ratio[0], rel=1e-10)
    assert plane.attrs["pca_explained_ratio_y"] == pytest.approx(ratio[1], rel=1e-10)
    path = plane.paths["student"]
    assert np.abs(path["coordinates"][-1]).max() < 1e-12  # the model itself
    assert path["epochs"].tolist() == [0, 1, 2, 3, 4]
    projected = rows[6:] @ np.stack(axes).T
    assert path["coordinates"] == pytest.approx(projected, abs=1e-10)
    assert plane.labels == ["teacher", "student"]

    out = tmp_path / "pca.h5"
    x, y = (auto_axis(plane.paths["teacher"]["coordinates"][:, i], 5) for i in range(2))
    loss_surface(model, nn.functional.cross_entropy, {"train": DATA}, out, x_range=x,
                 y_range=y, plane=plane, batch_size=16)  # fmt: skip
    surface = load_surface(out)
    assert [str(p["label"][0]) for p in surface.paths] == ["teacher", "student"]
    assert surface.paths[1]["coordinates"] == pytest.approx(path["coordinates"])
    figure = plot_surfaces([out], tmp_path / "pca.png")
    assert figure.stat().st_size > 1000


def test_pca_needs_three_snapshots_that_move():
    model = cnn_batchnorm(3)
    with pytest.raises(LandscapeInputError, match="at least 3"):
        trajectory_plane(model, {"run": _trajectory(model, 1, 2)})
    still = [model.state_dict()] * 4
    with pytest.raises(LandscapeInputError, match="less than two dimensions"):
        trajectory_plane(model, {"run": still})


def test_an_automatic_axis_covers_the_models_and_passes_through_the_origin():
    values = np.array([-3.2, 0.0, 11.8])
    axis = auto_axis(values, 31)
    assert len(axis) == 31 and 0.0 in axis.tolist()
    assert axis[0] < -3.2 and axis[-1] > 11.8
