"""The straight path between two networks and its barrier, against closed forms and a rebuild."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.pairs import line_excess, linear_path


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()


def _data(seed: int = 0) -> dict[str, list]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (48,), generator=g)
    return {"train": [(x[:20], y[:20]), (x[20:40], y[20:40])], "test": [(x[40:], y[40:])]}


@pytest.mark.parametrize("batchnorm", ["recompute", "interpolate"])
def test_barrier_of_a_model_with_itself_is_zero(batchnorm):
    model = _bn_net(0)
    path = linear_path(model, copy.deepcopy(model), F.cross_entropy, _data(), 7, batchnorm)
    for split in ("train", "test"):
        assert path.loss_barrier(split) == 0.0
        assert path.accuracy_barrier(split) == 0.0
        assert np.ptp(path.loss[split]) == 0.0


def _linear_regression(w: torch.Tensor) -> nn.Module:
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w)
    return model


def _regression_data() -> tuple[torch.Tensor, torch.Tensor, dict[str, list]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.randn(30, 1, generator=g, dtype=torch.float64)
    return x, y, {"train": [(x[:10], y[:10]), (x[10:], y[10:])]}


def test_barrier_on_a_concave_quadratic_equals_its_closed_form():
    r"""L(w) = -mean (xw - y)^2: along the line L(t) = chord + t(1-t) c, c = |X(b-a)|^2 / n.

    The barrier is :math:`c / 4`, at t = 1/2 (on the grid).
    """
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randn(1, 3, generator=g, dtype=torch.float64) for _ in range(2))
    x, _, data = _regression_data()
    path = linear_path(_linear_regression(a), _linear_regression(b),
                       lambda out, y: -F.mse_loss(out, y), data, points=11)  # fmt: skip
    c = float(((x @ (b - a).T) ** 2).mean())
    assert path.loss_barrier() == pytest.approx(c / 4, rel=1e-12)
    t = path.t
    chord = (1 - t) * path.loss["train"][0] + t * path.loss["train"][-1]
    np.testing.assert_allclose(path.loss["train"] - chord, t * (1 - t) * c, rtol=1e-10, atol=1e-13)


def test_barrier_on_a_convex_quadratic_is_zero():
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randn(1, 3, generator=g, dtype=torch.float64) for _ in range(2))
    _, _, data = _regression_data()
    path = linear_path(_linear_regression(a), _linear_regression(b), F.mse_loss, data, 9)
    assert path.loss_barrier() == 0.0
    assert path.loss["train"][4] < 0.5 * (path.loss["train"][0] + path.loss["train"][-1])


def _rebuilt_loss(model, other, t, data, split):
    """A second implementation: load the weights, reset BatchNorm, one pass, eval."""
    point = copy.deepcopy(model)
    state = {n: (1 - t) * v + t * other.state_dict()[n] if v.is_floating_point() else v
             for n, v in model.state_dict().items()}  # fmt: skip
    point.load_state_dict(state)
    norms = [m for m in point.modules() if isinstance(m, nn.BatchNorm1d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    point.train()
    with torch.no_grad():
        for x, _ in data["train"]:
            point(x)
        point.eval()
        losses = [F.cross_entropy(point(x), y, reduction="sum") for x, y in data[split]]
    return float(sum(losses)) / sum(len(y) for _, y in data[split])


def test_recomputed_batchnorm_path_equals_a_rebuilt_model_at_each_point():
    model, other, data = _bn_net(0), _bn_net(1), _data()
    path = linear_path(model, other, F.cross_entropy, data, points=5)
    for split in ("train", "test"):
        want = [_rebuilt_loss(model, other, t, data, split) for t in path.t]
        np.testing.assert_allclose(path.loss[split], want, rtol=1e-10)
    interpolated = linear_path(model, other, F.cross_entropy, data, 5, "interpolate")
    for end, net in (
        (0, model),
        (-1, other),
    ):  # interpolated statistics: the models' own at the ends
        x = torch.cat([x for x, _ in data["train"]])
        y = torch.cat([y for _, y in data["train"]])
        with torch.no_grad():
            own = float(F.cross_entropy(copy.deepcopy(net).eval()(x), y))
        assert interpolated.loss["train"][end] == pytest.approx(own, rel=1e-10)
        assert abs(path.loss["train"][end] - own) > 1e-3  # fresh models: statistics 0 and 1


def test_accuracy_barrier_is_the_largest_drop_below_the_chord():
    t = np.linspace(0, 1, 5)
    assert line_excess(t, -np.array([90.0, 80.0, 10.0, 70.0, 50.0])) == pytest.approx(60.0)


def test_bad_requests_are_one_input_error():
    model = _bn_net(0)
    with pytest.raises(LandscapeInputError, match="at least its two ends"):
        linear_path(model, model, F.cross_entropy, _data(), points=1)
    with pytest.raises(LandscapeInputError, match="data\\['train'\\]"):
        linear_path(model, model, F.cross_entropy, {"test": _data()["test"]})
    with pytest.raises(LandscapeInputError, match="batchnorm 'reset'"):
        linear_path(model, model, F.cross_entropy, _data(), batchnorm="reset")
    with pytest.raises(LandscapeInputError, match="other checkpoint has no tensor"):
        linear_path(model, nn.Linear(4, 3).double(), F.cross_entropy, _data())
