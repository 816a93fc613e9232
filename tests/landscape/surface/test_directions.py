import pytest
import torch
from torch import nn

from landscape.errors import LandscapeInputError
from landscape.surface.directions import (
    eigen_directions,
    filter_normalize,
    hessian_directions,
    interpolation_direction,
    layer_normalize,
    normalize_direction,
    random_direction,
)
from tests.landscape.surface_problems import cnn_batchnorm, mlp


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


@pytest.mark.parametrize("make", [mlp, cnn_batchnorm], ids=["mlp", "cnn-bn"])
def test_filter_norms_of_the_direction_equal_the_weights_filter_norms(make):
    model = make()
    direction = random_direction(model, torch.Generator().manual_seed(0), "filter", "biasbn")
    for name, w in model.named_parameters():
        d = direction[name]
        assert d.shape == w.shape and d.dtype == w.dtype
        if w.dim() > 1:
            torch.testing.assert_close(
                _filter_norms(d), _filter_norms(w.detach()), rtol=1e-12, atol=0
            )
            # the direction is not the weights themselves: its filters point elsewhere
            assert not torch.allclose(d, w)


@pytest.mark.parametrize("make", [mlp, cnn_batchnorm], ids=["mlp", "cnn-bn"])
def test_ignore_biasbn_zeroes_biases_and_batchnorm_parameters(make):
    model = make()
    direction = random_direction(model, torch.Generator().manual_seed(0), "filter", "biasbn")
    one_dim = [name for name, p in model.named_parameters() if p.dim() <= 1]
    assert one_dim  # biases (and BN weight/bias for the CNN) exist
    for name in one_dim:
        assert torch.count_nonzero(direction[name]) == 0
    if make is cnn_batchnorm:
        assert {"1.weight", "1.bias"} <= set(one_dim)
        assert "1.running_mean" not in direction  # buffers are never moved by random directions


def test_ignore_none_normalizes_one_dimensional_parameters_entrywise():
    model = mlp()
    direction = random_direction(model, torch.Generator().manual_seed(0), "filter", "none")
    bias = model[0].bias.detach()
    torch.testing.assert_close(direction["0.bias"].abs(), bias.abs(), rtol=1e-12, atol=0)


def test_layer_normalization_matches_each_tensor_norm():
    model = mlp()
    direction = random_direction(model, torch.Generator().manual_seed(0), "layer", "none")
    for name, w in model.named_parameters():
        torch.testing.assert_close(direction[name].norm(), w.detach().norm(), rtol=1e-12, atol=0)


def test_no_normalization_is_the_raw_seeded_gaussian():
    model = mlp()
    direction = random_direction(model, torch.Generator().manual_seed(3), "none", "none")
    generator = torch.Generator().manual_seed(3)
    for name, w in model.named_parameters():
        expected = torch.randn(w.shape, generator=generator, dtype=w.dtype)
        torch.testing.assert_close(direction[name], expected, rtol=0, atol=0)


def test_directions_are_seeded_and_leave_the_global_rng_alone():
    model = mlp()
    state = torch.get_rng_state()
    a = random_direction(model, torch.Generator().manual_seed(7))
    b = random_direction(model, torch.Generator().manual_seed(7))
    c = random_direction(model, torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_filter_normalize_known_values_and_zero_filters():
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[0.0, 10.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(
        filter_normalize(d, w), torch.tensor([[6.0, 8.0], [0.0, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(layer_normalize(d, w), d * (w.norm() / 5.0))


def test_normalize_direction_does_not_modify_its_input():
    model = mlp()
    raw = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    weights = {n: p.detach() for n, p in model.named_parameters()}
    normalize_direction(raw, weights, "filter", "biasbn")
    assert all(torch.all(t == 1) for t in raw.values())


def test_bad_normalization_or_ignore_is_a_user_error():
    model = mlp()
    with pytest.raises(LandscapeInputError, match="normalization"):
        random_direction(model, torch.Generator(), "weight")
    with pytest.raises(LandscapeInputError, match="ignore"):
        random_direction(model, torch.Generator(), "filter", "bias")


def test_interpolation_direction_goes_exactly_to_the_other_state_including_bn_statistics():
    model, other = cnn_batchnorm(0), cnn_batchnorm(1)
    direction = interpolation_direction(model, other.state_dict())
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    assert "1.running_var" in direction and "1.num_batches_tracked" not in direction
    for name, d in direction.items():
        torch.testing.assert_close(
            own[name].detach() + d, other.state_dict()[name], rtol=1e-15, atol=1e-15
        )
    params_only = interpolation_direction(model, other.state_dict(), buffers=False)
    assert set(params_only) == {n for n, _ in model.named_parameters()}


def test_interpolation_to_another_architecture_is_refused():
    with pytest.raises(LandscapeInputError, match="one architecture"):
        interpolation_direction(mlp(), cnn_batchnorm().state_dict())
    wider = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4)).double()
    with pytest.raises(LandscapeInputError, match=r"shape \(9, 6\)"):
        interpolation_direction(mlp(), wider.state_dict())


def test_eigen_directions_split_flat_vectors_in_parameter_order():
    model = mlp()
    model[2].bias.requires_grad_(False)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    dim = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    vectors = torch.randn(dim, 2, dtype=torch.float64)
    first, second = eigen_directions(model, vectors)
    flat = torch.cat([first[n].reshape(-1) for n in names])
    torch.testing.assert_close(flat, vectors[:, 0], rtol=0, atol=0)
    assert torch.count_nonzero(second["2.bias"]) == 0  # frozen: not covered, zero
    with pytest.raises(LandscapeInputError, match="entries"):
        eigen_directions(model, [torch.zeros(dim + 1)])


def test_hessian_directions_are_the_top_eigenvectors_of_the_dense_hessian():
    from torch.func import functional_call, hessian

    from tests.landscape.surface_problems import classification_data

    model = mlp()
    batches = classification_data([7, 5], (6,))
    directions, eigenvalues = hessian_directions(
        model, nn.functional.cross_entropy, batches, count=2, tol=1e-10
    )
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    inputs, targets = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    def loss(flat):
        pieces = flat.split([s.numel() for s in shapes])
        params = {n: p.reshape(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(model, params, (inputs,)), targets)

    dense = hessian(loss)(theta)
    values, vectors = torch.linalg.eigh(dense)
    torch.testing.assert_close(eigenvalues, values.flip(0)[:2], rtol=1e-8, atol=1e-10)
    for k, direction in enumerate(directions):
        v = torch.cat([direction[n].reshape(-1) for n in names])
        assert abs(float(v @ vectors[:, -1 - k])) == pytest.approx(1.0, abs=1e-8)
        assert v[v.abs().argmax()] > 0  # sign convention
