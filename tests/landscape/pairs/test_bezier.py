"""The Bezier curve: exact ends, a trained curve below the straight line, resume that continues."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.pairs import CurveSettings, bezier_curve, bezier_point, linear_path
from landscape.surface.plot import load_surface, plot_surfaces


class Ring(nn.Module):
    """Two weights whose loss (|w|^2 - 1)^2 is zero on the unit circle: a curved valley."""

    def __init__(self, w: tuple[float, float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w**2).sum().expand(x.shape[0], 1)


def ring_loss(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return ((out - 1.0) ** 2).mean()


RING_DATA = {"train": [(torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4))]}


def test_trained_curve_goes_round_the_bump_the_straight_line_crosses(tmp_path):
    """From (1, 0) to (0, 1): the chord's middle has loss 1/4, the arc 0."""
    a, b = Ring((1.0, 0.0)), Ring((0.0, 1.0))
    line = linear_path(a, b, ring_loss, RING_DATA, points=21)
    assert line.max_loss() == pytest.approx(0.25, rel=1e-12)
    settings = CurveSettings(steps=150, lr=0.05, points=21)
    curve = bezier_curve(a, b, ring_loss, RING_DATA, tmp_path / "c.h5", settings)
    assert curve.values.max_loss() <= line.max_loss()
    assert curve.values.max_loss() < 0.02
    # the curve's own points, rebuilt from its control point
    for k in (0, 7, 10, 20):
        t = float(curve.values.t[k])
        w = bezier_point({"w": a.w.detach()}, curve.control, {"w": b.w.detach()}, t)["w"]
        assert curve.values.loss["train"][k] == pytest.approx(float((w @ w - 1) ** 2), abs=1e-12)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2)).double()


def _data() -> dict[str, list]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    return {"train": [(x[:16], y[:16]), (x[16:32], y[16:32])], "test": [(x[32:], y[32:])]}


def test_curve_ends_are_the_two_models(tmp_path):
    a, b, data = _net(0), _net(1), _data()
    curve = bezier_curve(a, b, F.cross_entropy, data, tmp_path / "c.h5", CurveSettings(steps=6))
    start, end = dict(a.named_parameters()), dict(b.named_parameters())
    for t, model in ((0.0, start), (1.0, end)):
        point = bezier_point(start, curve.control, end, t)
        assert all(torch.equal(point[n], model[n]) for n in point)
    line = linear_path(a, b, F.cross_entropy, data, points=41)  # the same ends, evaluated alike
    for split in ("train", "test"):
        np.testing.assert_allclose(curve.values.loss[split][[0, -1]], line.loss[split][[0, -1]],
                                   rtol=1e-12)  # fmt: skip
        np.testing.assert_allclose(curve.values.acc[split][[0, -1]], line.acc[split][[0, -1]])


class _Killed(Exception):
    pass


def test_a_rerun_continues_a_killed_training_where_it_was_saved(tmp_path):
    a, b, data = _net(0), _net(1), _data()
    settings = CurveSettings(steps=20, save_every=5, points=5)
    whole = bezier_curve(a, b, F.cross_entropy, data, tmp_path / "whole.h5", settings)

    def kill_after_12(count: int, seen=[]) -> None:  # noqa: B006 - one run's counter
        seen.append(count)
        if len(seen) == 12:
            raise _Killed

    out = tmp_path / "killed.h5"
    with pytest.raises(_Killed):
        bezier_curve(a, b, F.cross_entropy, data, out, settings, progress=kill_after_12)
    assert np.isnan(load_surface(out).values["train_loss"]).all()  # no point final yet
    with pytest.raises(LandscapeInputError, match="exists; pass --resume"):
        bezier_curve(a, b, F.cross_entropy, data, out, settings)
    calls: list[int] = []
    resumed = bezier_curve(a, b, F.cross_entropy, data, out, settings, resume=True,
                           progress=calls.append)  # fmt: skip
    assert calls == [1] * 10 + [5]  # steps 10..19 (saved at 10), then the 5 points
    for name, control in whole.control.items():
        torch.testing.assert_close(resumed.control[name], control, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(resumed.values.loss["test"], whole.values.loss["test"], rtol=1e-10)
    again: list[int] = []  # a finished file: nothing is recomputed
    bezier_curve(a, b, F.cross_entropy, data, out, settings, resume=True, progress=again.append)
    assert again == []


def test_resume_with_other_settings_or_other_ends_is_refused(tmp_path):
    a, b, data = _net(0), _net(1), _data()
    out = tmp_path / "c.h5"
    bezier_curve(a, b, F.cross_entropy, data, out, CurveSettings(steps=2, points=3))
    with pytest.raises(LandscapeInputError, match="lr"):
        bezier_curve(a, b, F.cross_entropy, data, out, CurveSettings(steps=2, points=3, lr=0.1),
                     resume=True)  # fmt: skip
    with pytest.raises(LandscapeInputError, match="direction"):
        bezier_curve(a, _net(2), F.cross_entropy, data, out, CurveSettings(steps=2, points=3),
                     resume=True)  # fmt: skip


def test_the_curve_file_is_a_surface_that_plot_draws(tmp_path):
    a, b, data = _net(0), _net(1), _data()
    out = tmp_path / "c.h5"
    curve = bezier_curve(a, b, F.cross_entropy, data, out, CurveSettings(steps=3, points=9))
    surface = load_surface(out)
    np.testing.assert_array_equal(surface.x, curve.values.t)
    np.testing.assert_array_equal(surface.values["test_acc"], curve.values.acc["test"])
    assert plot_surfaces([out], tmp_path / "c.png").stat().st_size > 0


def test_curve_training_leaves_both_models_as_they_were(tmp_path):
    a, b, data = _net(0).train(), _net(1).train(), _data()
    before = [copy.deepcopy(m.state_dict()) for m in (a, b)]
    bezier_curve(a, b, F.cross_entropy, data, tmp_path / "c.h5", CurveSettings(steps=4, points=3))
    for model, state in zip((a, b), before, strict=True):
        assert model.training and all(m.training for m in model.modules())
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
