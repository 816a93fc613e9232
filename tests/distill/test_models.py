"""Tests for the model registry: parameter counts, shapes, kwargs handling, determinism."""

import json
import math

import pytest
import torch
from torch import nn

from distill.errors import DistillInputError
from distill.models import (
    ARCHITECTURES,
    VGG_CONFIGS,
    ZeroPadShortcut,
    build_model,
    count_parameters,
    input_kwargs,
    model_kwargs_defaults,
    resolve_model_kwargs,
)

# Default input shape of every architecture, without the batch dimension.
DEFAULT_INPUTS = {
    "mlp": (40,),
    "cnn1d": (40,),
    "lenet": (1, 8, 8),
    "resnet20": (3, 32, 32),
    "resnet32": (3, 32, 32),
    "resnet56": (3, 32, 32),
    "resnet18": (3, 32, 32),
    "vgg": (3, 32, 32),
    "vit": (3, 32, 32),
}


def option_a_resnet_count(blocks_per_stage: int, num_classes: int = 10) -> int:
    """Closed-form parameter count of He et al.'s CIFAR ResNet with option-A shortcuts."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    for stage, c in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            c_in = c // 2 if stage > 0 and block == 0 else c
            total += c_in * c * 9 + c * c * 9 + 2 * (2 * c)  # two convs, two BNs
    return total + 64 * num_classes + num_classes


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_has_the_agreed_architectures():
    assert set(ARCHITECTURES) == set(DEFAULT_INPUTS) | {"gpt"}  # gpt: tests/distill/test_gpt.py


def test_cnn1d_parameter_count_matches_paper():
    # conv(1->32,k5) + 2 x conv(32->32,k3) + linear(320->10), all with biases.
    expected = (1 * 32 * 5 + 32) + 2 * (32 * 32 * 3 + 32) + (320 * 10 + 10)
    assert expected == 9_610
    assert count_parameters(build_model("cnn1d")) == expected


@pytest.mark.parametrize(
    ("arch", "blocks", "expected"),
    [("resnet20", 3, 269_722), ("resnet32", 5, 464_154), ("resnet56", 9, 853_018)],
)
def test_cifar_resnet_option_a_parameter_counts(arch, blocks, expected):
    assert option_a_resnet_count(blocks) == expected
    model = build_model(arch)
    assert count_parameters(model) == expected
    assert not any("shortcut" in name for name, _ in model.named_parameters())


def test_resnet20_option_b_adds_two_projection_shortcuts():
    # 1x1 conv + BN at the two stage changes: 16->32 and 32->64.
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(build_model("resnet20", shortcut="B")) == 269_722 + extra


def test_resnet18_cifar_parameter_count():
    # kuangliu/pytorch-cifar ResNet18 with 10 classes.
    model = build_model("resnet18")
    assert count_parameters(model) == 11_173_962
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.stem[0].kernel_size == (3, 3)


def test_other_parameter_counts():
    assert count_parameters(build_model("mlp")) == (40 * 100 + 100) + (100 * 100 + 100) + 1010
    lenet = (6 * 25 + 6) + (6 * 16 * 25 + 16) + (64 * 120 + 120) + (120 * 84 + 84) + 850
    assert count_parameters(build_model("lenet")) == lenet
    convs = 3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 512
    vgg8 = 9 * convs + 2 * (64 + 128 + 256 + 512 + 512) + 512 * 10 + 10
    assert count_parameters(build_model("vgg")) == vgg8


def test_count_parameters_excludes_buffers():
    model = nn.BatchNorm1d(7)
    assert count_parameters(model) == 14


@pytest.mark.parametrize("arch", sorted(DEFAULT_INPUTS))
def test_output_shape_on_default_input(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(2, *DEFAULT_INPUTS[arch])
    with torch.no_grad():
        assert model(x).shape == (2, 10)


def test_cnn1d_accepts_both_input_layouts():
    torch.manual_seed(0)
    model = build_model("cnn1d")
    x = torch.randn(3, 40)
    torch.testing.assert_close(model(x), model(x.unsqueeze(1)), rtol=0, atol=0)


@pytest.mark.parametrize("input_length", [37, 40, 41])
def test_cnn1d_linear_layer_fits_any_length(input_length):
    model = build_model("cnn1d", input_length=input_length, width=4, num_classes=3)
    assert model(torch.randn(2, 1, input_length)).shape == (2, 3)


@pytest.mark.parametrize("config", sorted(VGG_CONFIGS))
@pytest.mark.parametrize("side", [8, 32])
def test_vgg_configs_on_small_and_cifar_inputs(config, side):
    model = build_model("vgg", config=config, in_channels=1, width=4, num_classes=7).eval()
    assert model(torch.randn(2, 1, side, side)).shape == (2, 7)


def test_small_variants_on_8x8_images():
    x = torch.randn(2, 1, 8, 8)
    for arch in ("resnet20", "resnet18"):
        model = build_model(arch, in_channels=1, width=4, num_classes=5).eval()
        assert model(x).shape == (2, 5)
    assert build_model("mlp", input_dim=64, hidden=[8])(x).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_resnet_init_is_kaiming_normal_fan_in():
    torch.manual_seed(0)
    model = build_model("resnet56")
    conv = model.stages[2][4].conv2.weight  # 64 x 64 x 3 x 3 = 36,864 draws
    expected_std = math.sqrt(2.0 / (64 * 9))
    assert abs(conv.std().item() / expected_std - 1) < 0.03
    assert abs(conv.mean().item()) < 3 * expected_std / math.sqrt(conv.numel())


def test_vgg_init_follows_repdistiller():
    torch.manual_seed(0)
    model = build_model("vgg", config="vgg11")
    conv = model.features[-3].weight  # 512 x 512 x 3 x 3, fan_out = 512 * 9
    assert abs(conv.std().item() / math.sqrt(2.0 / (512 * 9)) - 1) < 0.01
    assert abs(model.classifier.weight.std().item() / 0.01 - 1) < 0.05
    assert model.classifier.bias.abs().sum() == 0
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("arch", sorted(DEFAULT_INPUTS))
def test_same_seed_gives_identical_weights(arch):
    small = {"resnet18": {"width": 8}, "vgg": {"width": 8}}.get(arch, {})
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        states.append(build_model(arch, **small).state_dict())
    for name, tensor in states[0].items():
        torch.testing.assert_close(states[1][name], tensor, rtol=0, atol=0)
    assert any(not torch.equal(states[2][n], t) for n, t in states[0].items())


def test_defaults_are_json_ready_and_complete():
    assert model_kwargs_defaults("mlp") == {
        "input_dim": 40,
        "hidden": [100, 100],
        "num_classes": 10,
    }
    assert model_kwargs_defaults("resnet20") == {
        "in_channels": 3,
        "num_classes": 10,
        "width": 16,
        "shortcut": "A",
    }
    for arch in ARCHITECTURES:
        defaults = model_kwargs_defaults(arch)
        assert json.loads(json.dumps(defaults)) == defaults
        assert "num_classes" in defaults


def test_resolved_kwargs_rebuild_the_same_model_after_json():
    kwargs = resolve_model_kwargs("mlp", hidden=(16, 8), num_classes=4)
    assert kwargs == {"input_dim": 40, "hidden": [16, 8], "num_classes": 4}
    stored = json.loads(json.dumps(kwargs))
    torch.manual_seed(1)
    first = build_model("mlp", hidden=(16, 8), num_classes=4).state_dict()
    torch.manual_seed(1)
    second = build_model("mlp", **stored).state_dict()
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=0)


def test_unknown_architecture_lists_known_names():
    with pytest.raises(DistillInputError) as info:
        build_model("resnet99")
    message = str(info.value)
    assert "resnet99" in message and "\n" not in message
    assert all(name in message for name in ARCHITECTURES)
    with pytest.raises(DistillInputError):
        model_kwargs_defaults("resnet99")


def test_unknown_kwarg_lists_accepted_ones():
    with pytest.raises(DistillInputError) as info:
        build_model("cnn1d", depth=3)
    message = str(info.value)
    assert "depth" in message and "\n" not in message
    assert all(name in message for name in model_kwargs_defaults("cnn1d"))


@pytest.mark.parametrize(
    ("arch", "kwargs", "fragment"),
    [
        ("mlp", {"num_classes": "10"}, "num_classes must be an int"),
        ("mlp", {"num_classes": True}, "num_classes must be an int"),
        ("mlp", {"hidden": [8, 2.5]}, "hidden must be a list of ints"),
        ("mlp", {"hidden": [8, 0]}, "hidden[1] must be a positive integer"),
        ("cnn1d", {"width": 0}, "width must be a positive integer"),
        ("lenet", {"input_size": 3}, "input_size must be at least 4"),
        ("resnet20", {"shortcut": "C"}, "shortcut must be 'A' or 'B'"),
        ("resnet56", {"shortcut": 1}, "shortcut must be a string"),
        ("vgg", {"config": "vgg19"}, "known: vgg8, vgg11, vgg13, vgg16"),
        ("resnet18", {"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_bad_kwarg_values_raise_input_error(arch, kwargs, fragment):
    with pytest.raises(DistillInputError) as info:
        build_model(arch, **kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("arch", "shape", "expected"),
    [
        ("mlp", (1, 8, 8), {"input_dim": 64}),
        ("cnn1d", (40,), {"input_length": 40, "in_channels": 1}),
        ("cnn1d", (2, 30), {"input_length": 30, "in_channels": 2}),
        ("lenet", (1, 8, 8), {"in_channels": 1, "input_size": 8}),
        ("resnet20", (3, 32, 32), {"in_channels": 3}),
        ("vgg", (1, 8, 8), {"in_channels": 1}),
    ],
)
def test_input_kwargs_fit_the_model_to_the_data(arch, shape, expected):
    kwargs = input_kwargs(arch, shape)
    assert kwargs == expected
    small = {"vgg": {"width": 4}, "resnet20": {"width": 4}}.get(arch, {})
    model = build_model(arch, **kwargs, **small).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(
    ("arch", "shape"), [("cnn1d", (1, 8, 8)), ("lenet", (40,)), ("vgg", (40,))]
)
def test_input_kwargs_reject_unsuitable_shapes(arch, shape):
    with pytest.raises(DistillInputError, match="needs inputs of shape"):
        input_kwargs(arch, shape)
