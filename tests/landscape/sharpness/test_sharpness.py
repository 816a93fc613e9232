"""Average- and worst-case sharpness: exact quadratic references and rescaling invariance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.sharpness import (
    GEOMETRIES,
    PerturbedLoss,
    average_sharpness,
    perturbation_scales,
    planned_evaluations,
    sharpness_report,
    worst_sharpness,
)
from landscape.sharpness.objective import gaussian_direction
from tests.landscape.cases import dense_hessian

LOSS = nn.functional.cross_entropy


def _relu_net(seed: int = 0) -> tuple[nn.Module, list]:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)
    ).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    batches = [(x[:25], torch.randint(0, 4, (25,))), (x[25:], torch.randint(0, 4, (15,)))]
    return model, batches


def _rescaled(model: nn.Module, factor: float) -> nn.Module:
    """Layer 0 (weights and bias) times ``factor``, layer 2's weights divided by it."""
    other = _relu_net()[0]
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other[0].weight.mul_(factor)
        other[0].bias.mul_(factor)
        other[2].weight.div_(factor)
    return other


def _least_squares_minimum(seed: int = 0) -> tuple[nn.Module, list, torch.Tensor]:
    """A linear model at the exact minimum of its mean squared error, and that loss's Hessian."""
    torch.manual_seed(seed)
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 1, dtype=torch.float64)
    X = torch.cat([x, torch.ones(30, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(X, y).solution
    model = nn.Linear(4, 1).double()
    with torch.no_grad():
        model.weight.copy_(solution[:4].T)
        model.bias.copy_(solution[4])
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    return model, batches, dense_hessian(model, nn.functional.mse_loss, batches)


def _scale_matrix(model: nn.Module, geometry: str) -> torch.Tensor:
    weights = {n: p.detach() for n, p in model.named_parameters()}
    scales = perturbation_scales(weights, geometry)
    return torch.diag(torch.cat([scales[n].reshape(-1) for n in weights]))


def test_rescaling_leaves_adaptive_sharpness_unchanged_but_not_lambda_1():
    model, batches = _relu_net()
    other = _rescaled(model, 4.0)
    x = batches[0][0]
    torch.testing.assert_close(other(x), model(x), rtol=1e-12, atol=1e-12)  # same function

    lambda_1 = [torch.linalg.eigvalsh(dense_hessian(m, LOSS, batches))[-1] for m in (model, other)]
    assert abs(float(lambda_1[1] / lambda_1[0]) - 1) > 0.1

    before, after = PerturbedLoss(model, LOSS, batches), PerturbedLoss(other, LOSS, batches)
    for geometry in ("elementwise", "filterwise"):
        a = average_sharpness(before, 0.3, geometry, samples=8, seed=3)
        b = average_sharpness(after, 0.3, geometry, samples=8, seed=3)
        assert max(abs(v) for v in a.values) > 1e-3  # not trivially zero
        torch.testing.assert_close(
            torch.tensor(b.values), torch.tensor(a.values), rtol=1e-9, atol=0
        )
        a = worst_sharpness(before, 0.5, geometry, steps=5, restarts=2, seed=3)
        b = worst_sharpness(after, 0.5, geometry, steps=5, restarts=2, seed=3)
        torch.testing.assert_close(
            torch.tensor(b.values), torch.tensor(a.values), rtol=1e-8, atol=0
        )
    plain = [average_sharpness(o, 0.3, "plain", samples=8, seed=3) for o in (before, after)]
    assert abs(plain[1].increase / plain[0].increase - 1) > 0.1


@pytest.mark.parametrize("geometry", ["plain", "elementwise", "filterwise"])
def test_average_case_is_exact_on_a_quadratic(geometry):
    """Antithetic pairs cancel the odd terms: each draw is exactly rho^2/2 z^T C H C z."""
    model, batches = _least_squares_minimum()[:2]
    with torch.no_grad():
        model.weight.add_(0.3)  # away from the minimum: the linear term must cancel too
    H = dense_hessian(model, nn.functional.mse_loss, batches)
    objective = PerturbedLoss(model, nn.functional.mse_loss, batches)
    result = average_sharpness(objective, 0.2, geometry, samples=6, seed=11)
    C = _scale_matrix(model, geometry)
    generator = torch.Generator().manual_seed(11)
    for value in result.values:
        z = torch.cat(
            [t.reshape(-1) for t in gaussian_direction(objective.weights, generator).values()]
        )
        assert value == pytest.approx(0.5 * 0.04 * float(z @ C @ H @ C @ z), rel=1e-10, abs=1e-15)
    assert result.stderr == pytest.approx(result.spread / 6**0.5)
    assert result.evaluations == 12


@pytest.mark.parametrize("geometry", ["plain", "elementwise"])
def test_worst_case_reaches_the_top_eigenvalue_of_a_quadratic(geometry):
    r"""At a minimum of a quadratic the worst case in the ball is rho^2/2 lambda_max(C H C)."""
    model, batches, H = _least_squares_minimum()
    C = _scale_matrix(model, geometry)
    exact = 0.5 * 0.3**2 * float(torch.linalg.eigvalsh(C @ H @ C)[-1])
    objective = PerturbedLoss(model, nn.functional.mse_loss, batches)
    result = worst_sharpness(objective, 0.3, geometry, steps=40, restarts=2, seed=0)
    assert exact * (1 - 1e-3) <= result.increase <= exact * (1 + 1e-9)
    assert result.evaluations == 2 * 41 and result.stderr is None


def test_model_is_never_perturbed():
    model, batches = _relu_net()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = sharpness_report(model, LOSS, batches, rho=0.2, samples=3, steps=2, restarts=1)
    assert len(report["results"]) == 6
    assert model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_batchnorm_statistics_are_not_updated_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    batches = [(torch.randn(16, 3), torch.randint(0, 2, (16,)))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sharpness_report(model, LOSS, batches, 0.1, samples=2, steps=2, restarts=1, bn_mode="train")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_filterwise_does_not_move_biases():
    model, batches = _relu_net()
    scales = perturbation_scales({n: p.detach() for n, p in model.named_parameters()}, "filterwise")
    assert all(float(s.abs().max()) == 0.0 for n, s in scales.items() if n.endswith("bias"))
    row_rms = model[0].weight.detach().norm(dim=1) / 6**0.5
    torch.testing.assert_close(scales["0.weight"][:, 3], row_rms)


def test_seeded_and_reproducible():
    model, batches = _relu_net()
    objective = PerturbedLoss(model, LOSS, batches)
    first = average_sharpness(objective, 0.1, samples=4, seed=5)
    again = average_sharpness(objective, 0.1, samples=4, seed=5)
    other = average_sharpness(objective, 0.1, samples=4, seed=6)
    assert first.values == again.values and first.values != other.values
    report = sharpness_report(model, LOSS, batches, 0.1, ["worst"], ["plain"], steps=3, seed=5)
    assert (
        report["results"][0]["values"]
        == sharpness_report(model, LOSS, batches, 0.1, ["worst"], ["plain"], steps=3, seed=5)[
            "results"
        ][0]["values"]
    )
    assert report["loss"] == pytest.approx(float(objective.loss)) and report["examples"] == 40


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda o: average_sharpness(o, 0.0), "rho"),
        (lambda o: worst_sharpness(o, -1.0), "rho"),
        (lambda o: average_sharpness(o, 0.1, "spectral"), "geometry"),
        (lambda o: average_sharpness(o, 0.1, samples=1), "samples"),
        (lambda o: worst_sharpness(o, 0.1, steps=0), "steps"),
    ],
)
def test_bad_input_is_a_landscape_error(call, message):
    model, batches = _relu_net()
    with pytest.raises(LandscapeInputError, match=message):
        call(PerturbedLoss(model, LOSS, batches))


def test_unknown_measure_in_report():
    model, batches = _relu_net()
    with pytest.raises(LandscapeInputError, match="measure 'sharpest'"):
        sharpness_report(model, LOSS, batches, 0.1, measures=["sharpest"])


def test_progress_counts_the_planned_passes():
    model, batches = _relu_net()
    seen = []
    options = {"samples": 3, "steps": 2, "restarts": 2}
    sharpness_report(model, LOSS, batches, 0.1, progress=seen.append, **options)
    assert sum(seen) == planned_evaluations(["average", "worst"], GEOMETRIES, **options)


def test_the_gradient_batch_by_batch_equals_one_batch_and_autograd():
    model, batches = _relu_net()
    whole = [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))]
    split, one = PerturbedLoss(model, LOSS, batches), PerturbedLoss(model, LOSS, whole)
    scales = perturbation_scales(split.weights, "elementwise")
    u = gaussian_direction(split.weights, torch.Generator().manual_seed(1))
    value, grads = split.gradient(scales, u)
    value_one, grads_one = one.gradient(scales, u)
    assert value == pytest.approx(value_one, rel=1e-13)
    for name in split.names:
        torch.testing.assert_close(grads[name], grads_one[name], rtol=1e-12, atol=1e-14)
    leaves = {n: t.clone().requires_grad_(True) for n, t in u.items()}
    loss = split.at(split.perturbed(scales, leaves))
    reference = torch.autograd.grad(loss, [leaves[n] for n in split.names])
    for name, g in zip(split.names, reference, strict=True):
        torch.testing.assert_close(grads[name], g, rtol=1e-12, atol=1e-14)


def test_memory_budget_is_checked_before_the_run_and_reported(monkeypatch):
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    model, batches = _relu_net()
    free = sharpness_report(model, LOSS, batches, 0.05, ["average"], ["plain"], samples=2,
                            max_memory=None)  # fmt: skip
    assert free["memory"]["budget"] is None and free["memory"]["graph_bytes"] is None
    roomy = sharpness_report(model, LOSS, batches, 0.05, ["average"], ["plain"], samples=2,
                             max_memory=2**30)  # fmt: skip
    graph = roomy["memory"]["graph_bytes"]
    assert (
        roomy["memory"]["budget"] == 2**30 and graph >= 25 * (6 + 12 + 10 + 4) * 8
    )  # input, ReLU outputs, log-softmax
    assert roomy["results"][0]["values"] == free["results"][0]["values"]
    assert roomy["memory"]["peak"] > 0
    passes = []
    with pytest.raises(LandscapeInputError, match=r"one batch of 25 examples holds .* at most"):
        sharpness_report(model, LOSS, batches, 0.05, ["worst"], ["plain"],
                         progress=passes.append, max_memory=int(graph))  # fmt: skip
    assert passes == []  # stopped before the first perturbed pass
