"""Weight matching: function unchanged on every registry model, exact on permuted copies.

Every registry model is built small, in float64, with random BatchNorm/LayerNorm
parameters and running statistics (so a channel permuted without its statistics would
show). The permutation groups are derived from the graph, or declared in
``distill.permutations`` where fx cannot trace the forward (cnn1d, gpt).
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from distill.models import build_model
from distill.permutations import declared_permutation_groups
from landscape.pairs import (
    PermutationSpec,
    UnpermutableModelError,
    align_to,
    apply_permutations,
    parameter_distance,
    permutation_spec,
    random_permutations,
)

MODELS = {
    "mlp": ({"input_dim": 7, "hidden": [6, 5], "num_classes": 3}, (7,)),
    "cnn1d": ({"input_length": 9, "width": 5, "num_classes": 3}, (9,)),
    "lenet": ({"num_classes": 3}, (1, 8, 8)),
    "resnet20": ({"width": 3, "num_classes": 3}, (3, 8, 8)),
    "resnet20-B": ({"width": 3, "num_classes": 3, "shortcut": "B"}, (3, 8, 8)),
    "resnet32": ({"width": 2, "num_classes": 3}, (3, 8, 8)),
    "resnet56": ({"width": 2, "num_classes": 3}, (3, 8, 8)),
    "resnet18": ({"width": 2, "num_classes": 3}, (3, 8, 8)),
    "vgg": ({"width": 2, "num_classes": 3, "config": "vgg11"}, (3, 8, 8)),
    "gpt": ({"num_classes": 7, "context": 6, "width": 8, "layers": 2, "heads": 2}, (6,)),
    "vit": (
        {
            "num_classes": 3,
            "in_channels": 2,
            "image_size": 8,
            "patch": 4,
            "width": 8,
            "layers": 2,
            "heads": 2,
        },
        (2, 8, 8),
    ),
}


def _model(name: str, seed: int) -> nn.Module:
    """A registry model in float64 with every norm's parameters and statistics random."""
    arch = name.split("-")[0]
    torch.manual_seed(seed)
    model = build_model(arch, **MODELS[name][0]).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(name: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    if name == "gpt":
        return torch.randint(0, 7, (4, 6), generator=generator)
    return torch.randn(4, *MODELS[name][1], generator=generator, dtype=torch.float64)


def _spec(name: str, model: nn.Module) -> PermutationSpec:
    declared = declared_permutation_groups(name.split("-")[0], MODELS[name][0])
    if declared is None:
        return permutation_spec(model)
    return PermutationSpec.from_groups(declared, model.state_dict())


def test_every_registry_model_is_covered():
    from distill.models import ARCHITECTURES

    assert {name.split("-")[0] for name in MODELS} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", list(MODELS))
def test_aligned_student_computes_the_same_function(name):
    teacher, student = _model(name, 0), _model(name, 1)
    spec = _spec(name, student)
    assert spec.sizes, "no hidden unit is permuted"
    result = align_to(student, teacher, spec)
    aligned = _model(name, 2)
    aligned.load_state_dict(result.state_dict)
    x = _inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(aligned(x), student(x), rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in result.permutations.values())
    assert result.distance_after <= result.distance_before
    names = [n for n, _ in student.named_parameters()]
    assert result.distance_after == pytest.approx(
        parameter_distance(teacher.state_dict(), result.state_dict, names), rel=1e-12
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_a_random_permutation_is_a_function_preserving_symmetry(name):
    """The spec's groups are symmetries: any permutation of them keeps the outputs."""
    model = _model(name, 0)
    spec = _spec(name, model)
    perms = random_permutations(spec, torch.Generator().manual_seed(3))
    permuted = _model(name, 2)
    permuted.load_state_dict(apply_permutations(model.state_dict(), spec, perms))
    x = _inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_aligning_a_permuted_copy_recovers_the_permutation(name):
    model = _model(name, 0)
    spec = _spec(name, model)
    perms = random_permutations(spec, torch.Generator().manual_seed(4))
    copy = _model(name, 2)
    copy.load_state_dict(apply_permutations(model.state_dict(), spec, perms))
    result = align_to(copy, model, spec)
    assert result.distance_before > 0
    assert result.distance_after == 0.0
    for group, perm in perms.items():  # copy unit perm[i] sits at i: undo it
        torch.testing.assert_close(result.permutations[group], torch.argsort(perm))
    for key, tensor in model.state_dict().items():
        assert torch.equal(result.state_dict[key], tensor), key


def test_alignment_never_increases_the_distance_over_seeds():
    for seed, (name) in itertools.product(range(3), ("mlp", "resnet20", "vgg")):
        teacher, student = _model(name, 10 + seed), _model(name, 20 + seed)
        result = align_to(student, teacher, _spec(name, student), seed=seed)
        assert result.distance_after <= result.distance_before, (name, seed)


def test_weight_matching_is_the_optimum_on_a_one_group_mlp():
    """One hidden layer: one linear assignment is exact; compare with every permutation."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    student = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    spec = permutation_spec(student)
    names = [n for n, _ in student.named_parameters()]
    best = min(
        parameter_distance(
            teacher.state_dict(),
            apply_permutations(student.state_dict(), spec, {"0": torch.tensor(p)}),
            names,
        )
        for p in itertools.permutations(range(5))
    )
    assert align_to(student, teacher).distance_after == pytest.approx(best, rel=1e-12)


def test_the_derived_spec_of_a_resnet_ties_the_residual_stream():
    model = _model("resnet20-B", 0)
    spec = permutation_spec(model)
    stream = {axis.name for axis in spec.axes["stem.0"]}
    assert {"stem.1.running_mean", "stages.0.2.bn2.weight", "stages.1.0.conv1.weight",
            "stages.1.0.shortcut.0.weight"} <= stream  # fmt: skip
    assert "fc.weight" not in stream and "stages.1.0.bn2.weight" not in stream


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.attention = nn.MultiheadAttention(6, 2, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attention(h, h, h)[0])


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x):
        return self.layer(x) if x.dim() == 2 else x


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Attention(), "cannot permute hidden units through MultiheadAttention in module "
                       "'attention' of _Attention; pass spec="),
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)),
         "through GroupNorm in module '1' of Sequential"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1)), "through Softmax in module '1'"),
        (_Untraceable(), "torch.fx cannot trace _Untraceable.forward"),
    ],
)  # fmt: skip
def test_what_cannot_be_permuted_is_refused_in_one_line_naming_the_module(model, message):
    with pytest.raises(UnpermutableModelError) as caught:
        align_to(model, model.state_dict())
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_spec_that_does_not_fit_is_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    state = model.state_dict()
    with pytest.raises(UnpermutableModelError, match="no tensor '0.weigth'"):
        PermutationSpec.from_groups({"h": [["0.weigth", 0]]}, state)
    with pytest.raises(UnpermutableModelError, match="do not fit axis 1 of 2.weight"):
        PermutationSpec.from_groups({"h": [["0.weight", 0], ["2.weight", 1, 2]]}, state)
    with pytest.raises(UnpermutableModelError, match="permuted by groups 'a' and 'b'"):
        PermutationSpec.from_groups({"a": [["0.weight", 0]], "b": [["0.bias", 0],
                                     ["0.weight", 0]]}, state)  # fmt: skip


def test_models_of_other_shapes_are_refused():
    small = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    wide = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(Exception, match="0.weight has shape \\(4, 3\\) in the model and"):
        align_to(small, wide)


def test_inputs_and_outputs_are_never_permuted():
    """A residual add of the raw input freezes the group it meets."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(4, 6)
            self.outer = nn.Linear(6, 4)

        def forward(self, x):
            return x + self.outer(torch.relu(self.inner(x)))

    spec = permutation_spec(Residual())
    assert spec.sizes == {"inner": 6}


class _ViewNet(nn.Module):
    """flatten(1) spelled ``x.view(x.size(0), -1)`` into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(2, 5, 3), nn.Conv1d(5, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 3, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.view(x.size(0), -1))


class _MeanNet(nn.Module):
    """A spatial mean, then linear - BatchNorm1d - ReLU - linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc1, self.bn1, self.fc2 = nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


class _PreNormMLP(nn.Module):
    """A pre-norm residual MLP on token features (N, L, D): LayerNorm, residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.norm1, self.norm2 = nn.LayerNorm(6), nn.LayerNorm(6)
        self.mlp = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.mlp(self.norm1(x))
        return self.head(self.norm2(x))


OWN = {
    "view": (_ViewNet, (2, 9), {"conv1": 5, "conv2": 4}),
    "mean": (_MeanNet, (2, 4, 4), {"conv": 6, "fc1": 5}),
    "prenorm": (_PreNormMLP, (4, 3), {"embed": 6, "mlp.0": 8}),
}


@pytest.mark.parametrize("name", list(OWN))
def test_own_models_spec_is_derived_and_a_symmetry(name):
    build, shape, sizes = OWN[name]
    torch.manual_seed(0)
    model = build().double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    spec = permutation_spec(model)
    assert spec.sizes == sizes
    perms = random_permutations(spec, torch.Generator().manual_seed(1))
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(apply_permutations(model.state_dict(), spec, perms))
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model(x), rtol=1e-10, atol=1e-10)
    result = align_to(permuted, model)
    assert result.distance_after == 0.0


def test_a_permuted_weight_used_outside_its_module_is_refused():
    """A tied weight (the embedding reused as the output layer) is read by a get_attr."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            return self.out(torch.relu(self.fc(x))) + nn.functional.linear(x, self.fc.weight.T)

    with pytest.raises(UnpermutableModelError, match="a direct use of fc.weight"):
        permutation_spec(Tied())


def test_a_transpose_of_permuted_features_is_refused():
    class Gram(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = self.fc(x)
            return h @ h.T  # the units' order is summed over here, but x.T is not followed

    with pytest.raises(UnpermutableModelError, match="through x.T in the model's forward of Gram"):
        permutation_spec(Gram())
