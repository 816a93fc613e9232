"""Temperature matching: the fitted loss, the T = 1 identity and unreachable targets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.curvature.model import model_curvature
from landscape.curvature.temperature import (
    TemperatureScaled,
    fit_temperature,
    temperature_matched_curvature,
)
from landscape.errors import LandscapeInputError
from tests.landscape.cases import dense_hessian

LOSS = nn.functional.cross_entropy


def _classifier(
    seed: int = 0, all_correct: bool = False, chance: bool = False
) -> tuple[nn.Module, list]:
    """A classifier whose labels are its own predictions, 6 of 60 flipped unless all_correct."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(60, 5, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    if not all_correct:
        y[:6] = (y[:6] + 1) % 3
    if chance:
        y = torch.randint(0, 3, (60,))
    return model, [(x[:40], y[:40]), (x[40:], y[40:])]


def _loss(model: nn.Module, batches: list) -> float:
    with torch.no_grad():
        return sum(len(y) / 60 * float(LOSS(model(x), y)) for x, y in batches)


@pytest.mark.parametrize("all_correct", [True, False], ids=["separable", "with-errors"])
@pytest.mark.parametrize("target", [0.6, 0.9])
def test_matched_model_hits_the_target_loss(all_correct, target):
    model, batches = _classifier(all_correct=all_correct)
    fit = fit_temperature(model, batches, target)
    matched = TemperatureScaled(model, fit.temperature)
    assert abs(_loss(matched, batches) - target) < 1e-4
    assert abs(fit.matched_loss - target) < 1e-9
    assert fit.temperature >= fit.min_temperature and fit.raw_loss == pytest.approx(
        _loss(model, batches)
    )
    assert (fit.min_temperature == 0.0) == all_correct


def test_float32_model_hits_the_target_too():
    model, batches = _classifier(all_correct=True)
    model = model.float()
    batches = [(x.float(), y) for x, y in batches]
    fit = fit_temperature(model, batches, 0.25)
    assert abs(_loss(TemperatureScaled(model, fit.temperature), batches) - 0.25) < 1e-4


def test_temperature_one_is_the_original_model():
    model, batches = _classifier()
    same = TemperatureScaled(model, 1.0)
    x = batches[0][0]
    assert torch.equal(same(x), model(x))
    torch.testing.assert_close(
        dense_hessian(same, LOSS, batches), dense_hessian(model, LOSS, batches), rtol=0, atol=0
    )
    fit = fit_temperature(model, batches, _loss(model, batches))  # the model's own loss
    assert fit.temperature == pytest.approx(1.0, abs=1e-8)


def test_scaled_model_has_the_model_parameters_only():
    model, _ = _classifier()
    scaled = TemperatureScaled(model, 2.5)
    assert [n for n, _ in scaled.named_parameters()] == [
        f"model.{n}" for n, _ in model.named_parameters()
    ]
    assert float(scaled.temperature) == 2.5


@pytest.mark.parametrize("target", [0.0, 1e-6, math.log(3), 5.0])
def test_unreachable_targets_are_input_errors(target):
    model, batches = _classifier(chance=True)  # random labels: the minimum is near log 3
    with pytest.raises(LandscapeInputError, match="cannot be reached"):
        fit_temperature(model, batches, target)


def test_bad_temperature_is_an_input_error():
    with pytest.raises(LandscapeInputError, match="temperature"):
        TemperatureScaled(nn.Linear(2, 2), 0.0)


def test_matched_curvature_reports_raw_and_matched_numbers():
    model, batches = _classifier(all_correct=True)
    report = temperature_matched_curvature(model, batches, 0.3, top_k=2, trace_matvecs=5, tol=1e-8)
    T = report["temperature"]
    raw = torch.linalg.eigvalsh(dense_hessian(model, LOSS, batches)).flip(0)[:2]
    matched = torch.linalg.eigvalsh(dense_hessian(TemperatureScaled(model, T), LOSS, batches))
    torch.testing.assert_close(torch.tensor(report["raw"]["eigenvalues"], dtype=torch.float64), raw)
    torch.testing.assert_close(
        torch.tensor(report["matched"]["eigenvalues"], dtype=torch.float64), matched.flip(0)[:2]
    )
    assert report["matched"]["loss"] == pytest.approx(0.3, abs=1e-9)
    assert report["raw"]["loss"] == pytest.approx(_loss(model, batches))
    assert report["matched"]["trace"]["matvecs"] == 5


def test_matched_run_starts_from_the_raw_vectors():
    """The warm start saves products; the values are those of a cold run to the tolerance."""
    model, batches = _classifier(all_correct=True)
    report = temperature_matched_curvature(model, batches, 0.8, top_k=1, tol=1e-3)
    scaled = TemperatureScaled(model, report["temperature"])
    cold = model_curvature(scaled, LOSS, batches, top_k=1, tol=1e-3)
    exact = float(torch.linalg.eigvalsh(dense_hessian(scaled, LOSS, batches))[-1])
    assert report["matched"]["eigenvalues"][0] == pytest.approx(exact, rel=1e-3)
    assert report["matched"]["eigen_matvecs"] < cold.eigen.matvecs
