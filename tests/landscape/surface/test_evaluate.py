import numpy as np
import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.surface.directions import interpolation_direction, random_direction
from landscape.surface.evaluate import (
    VMAP_MAX_BATCH,
    SurfaceEvaluator,
    compute_surface,
    evaluate_points,
    grid_points,
)
from tests.landscape.surface_problems import classification_data, cnn_batchnorm, mlp, reference_loss

CE = nn.functional.cross_entropy


def _problem(kind: str):
    if kind == "mlp":
        return mlp(), classification_data([7, 5, 3], (6,))
    return cnn_batchnorm(), classification_data([6, 4], (1, 6))


def _two_directions(model):
    generator = torch.Generator().manual_seed(0)
    return random_direction(model, generator), random_direction(model, generator)


@pytest.mark.parametrize("vectorize", ["never", "always"])
@pytest.mark.parametrize("kind", ["mlp", "cnn-bn"])
def test_value_at_a_point_equals_the_loss_of_the_moved_weights(kind, vectorize):
    model, batches = _problem(kind)
    dx, dy = _two_directions(model)
    coords = np.array([[0.5, -0.25], [-1.0, 1.0], [0.0, 0.0], [0.3, 0.7]])
    values = evaluate_points(model, CE, batches, [dx, dy], coords, vectorize=vectorize)
    for k, (a, b) in enumerate(coords):
        loss, acc = reference_loss(model, batches, [(a, dx), (b, dy)])
        assert values.loss[k] == pytest.approx(loss, rel=1e-12, abs=1e-14)
        assert values.acc[k] == pytest.approx(acc, abs=1e-12)


def test_origin_equals_the_plain_evaluation_of_the_model():
    model, batches = _problem("cnn-bn")
    values = evaluate_points(model, CE, batches, list(_two_directions(model)), np.zeros((1, 2)))
    loss, acc = reference_loss(model, batches, [])
    assert values.loss[0] == pytest.approx(loss, rel=1e-13)
    assert values.acc[0] == acc


def test_mean_over_examples_does_not_depend_on_the_batching():
    model, batches = _problem("mlp")
    direction = [_two_directions(model)[0]]
    coords = np.array([[0.0], [0.8]])
    inputs, targets = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    whole = evaluate_points(model, CE, [(inputs, targets)], direction, coords)
    split = evaluate_points(model, CE, batches, direction, coords)
    np.testing.assert_allclose(split.loss, whole.loss, rtol=1e-13)
    np.testing.assert_array_equal(split.acc, whole.acc)


def test_interpolation_reaches_the_other_models_loss_at_one():
    model, batches = _problem("cnn-bn")
    other = cnn_batchnorm(seed=5)
    direction = interpolation_direction(model, other.state_dict())
    values = evaluate_points(model, CE, batches, [direction], np.array([[0.0], [1.0]]))
    assert values.loss[0] == pytest.approx(reference_loss(model, batches, [])[0], rel=1e-13)
    assert values.loss[1] == pytest.approx(reference_loss(other, batches, [])[0], rel=1e-12)


@pytest.mark.parametrize("vectorize", ["never", "always"])
def test_model_is_untouched_even_when_the_loss_raises(vectorize):
    model, batches = _problem("cnn-bn" if vectorize == "never" else "mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objects = dict(model.named_parameters()) | dict(model.named_buffers())
    modes = [m.training for m in model.modules()]
    calls = 0

    def failing_loss(outputs, targets):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected")
        return CE(outputs, targets)

    evaluator = SurfaceEvaluator(model, failing_loss, list(_two_directions(model)), vectorize)
    with pytest.raises(RuntimeError, match="injected"):
        evaluator.evaluate(batches, np.array([[1.0, 1.0], [2.0, -1.0]]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    now = dict(model.named_parameters()) | dict(model.named_buffers())
    assert all(now[k] is objects[k] for k in objects)  # the very same tensors are back
    assert [m.training for m in model.modules()] == modes


def test_accuracy_is_nan_without_class_labels_and_regression_losses_work():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    data = [(torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64))]
    direction = {"bias": torch.ones(2, dtype=torch.float64)}
    values = evaluate_points(model, nn.functional.mse_loss, data, [direction], np.array([[2.0]]))
    x, y = data[0]
    expected = nn.functional.mse_loss(model(x) + 2.0, y).item()
    assert values.loss[0] == pytest.approx(expected, rel=1e-13)
    assert np.isnan(values.acc[0])


def test_diverged_points_are_stored_as_they_are():
    model, batches = _problem("mlp")
    direction = {"2.bias": torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)}
    values = evaluate_points(model, CE, batches, [direction], np.array([[np.inf], [0.0]]))
    assert not np.isfinite(values.loss[0]) and np.isfinite(values.loss[1])


def test_auto_never_vectorizes_convolutions_and_times_mlps():
    cnn, cnn_batches = _problem("cnn-bn")
    evaluator = SurfaceEvaluator(cnn, CE, list(_two_directions(cnn)))
    assert evaluator.vectorize == "never"
    model, batches = _problem("mlp")
    evaluator = SurfaceEvaluator(model, CE, list(_two_directions(model)))
    assert evaluator.vectorize == "auto"
    evaluator.evaluate(batches, np.zeros((4, 2)))
    assert evaluator.vectorize in ("always", "never")
    assert set(evaluator.timings) == {"always", "never"}
    large = classification_data([VMAP_MAX_BATCH + 1], (6,))
    evaluator = SurfaceEvaluator(model, CE, list(_two_directions(model)))
    evaluator.evaluate(large, np.zeros((4, 2)))
    assert evaluator.vectorize == "never" and not evaluator.timings


def test_grid_points_are_row_major_over_y_then_x():
    x, y = np.array([-1.0, 0.0, 1.0]), np.array([10.0, 20.0])
    points = grid_points(x, y)
    assert points.shape == (6, 2)
    grid = points.reshape(2, 3, 2)  # (ny, nx, [x, y])
    np.testing.assert_array_equal(grid[1, 2], [1.0, 20.0])  # row j=1, column i=2: (x_2, y_1)
    np.testing.assert_array_equal(grid_points(x)[:, 0], x)


def test_compute_surface_writes_every_pending_point_once_in_blocks():
    model, batches = _problem("mlp")
    evaluator = SurfaceEvaluator(model, CE, list(_two_directions(model)), "never")
    coords = grid_points(np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    written, progressed = [], []
    pending = np.array([0, 3, 4, 5, 6, 7, 8, 9, 11, 12, 19])
    compute_surface(
        evaluator,
        {"train": batches, "test": batches[:1]},
        coords,
        pending,
        lambda idx, values: written.append((idx.copy(), values)),
        progress=progressed.append,
        max_block=4,
    )
    np.testing.assert_array_equal(np.concatenate([w[0] for w in written]), pending)
    assert max(len(w[0]) for w in written) <= 4 and sum(progressed) == len(pending)
    idx, values = written[-1]
    direct = evaluate_points(model, CE, batches[:1], evaluator.directions, coords[idx], "never")
    np.testing.assert_array_equal(values["test"].loss, direct.loss)


def test_bad_directions_and_data_are_user_errors():
    model, batches = _problem("mlp")
    with pytest.raises(LandscapeInputError, match="not a parameter"):
        SurfaceEvaluator(model, CE, [{"nope": torch.zeros(1)}])
    with pytest.raises(LandscapeInputError, match="shape"):
        SurfaceEvaluator(model, CE, [{"0.bias": torch.zeros(3)}])
    evaluator = SurfaceEvaluator(model, CE, [{"0.bias": torch.zeros(8, dtype=torch.float64)}])
    with pytest.raises(LandscapeInputError, match="iterator"):
        evaluator.evaluate(iter(batches), np.zeros((1, 1)))
    with pytest.raises(LandscapeInputError, match="no examples"):
        evaluator.evaluate([], np.zeros((1, 1)))


def test_tied_weights_move_together():
    torch.manual_seed(0)
    encoder, decoder = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    decoder.weight = encoder.weight
    model = nn.Sequential(encoder, nn.Tanh(), decoder).double()
    assert [n for n, _ in model.named_parameters()] == ["0.weight"]
    batches = classification_data([6], (4,))
    direction = random_direction(model, torch.Generator().manual_seed(1), "none", "none")
    values = evaluate_points(model, CE, batches, [direction], np.array([[0.7]]), "never")
    loss, _ = reference_loss(model, batches, [(0.7, direction)])
    assert values.loss[0] == pytest.approx(loss, rel=1e-12)
    assert model[2].weight is model[0].weight
