"""Model registry: every architecture flatscape trains, built from JSON-safe keyword arguments.

A checkpoint stores ``arch`` and the full keyword arguments returned by
:func:`resolve_model_kwargs`; :func:`build_model` rebuilds the same network from them.
Keyword values are plain ints, strings or lists of ints, so they survive a JSON
round trip. Construction draws only from torch's global RNG, so ``torch.manual_seed``
fixes the initial weights.

Architectures (default input shape in brackets):

- ``mlp`` [(N, 40), any shape flattened]: ReLU multilayer perceptron.
- ``cnn1d`` [(N, 40) or (N, 1, 40)]: the MNIST-1D CNN, 9,610 parameters.
- ``lenet`` [(N, 1, 8, 8)]: LeNet-5 style CNN for the 8x8 digits.
- ``resnet20``, ``resnet32``, ``resnet56`` [(N, 3, 32, 32)]: CIFAR ResNets of He et al. 2016.
- ``resnet18`` [(N, 3, 32, 32)]: CIFAR ResNet-18 (3x3 stem, no max-pool).
- ``vgg`` [(N, 3, 32, 32)]: VGG with BatchNorm, configs ``vgg8``/``vgg11``/``vgg13``/``vgg16``.
- ``gpt`` [(N, L) token ids]: a tiny decoder-only transformer (:mod:`distill.gpt`), next-token
  logits ``(N, L, num_classes)`` with ``num_classes`` the vocabulary.
- ``vit`` [(N, C, S, S)]: a tiny Vision Transformer (:mod:`distill.vit`); 4 x 4 patches of
  the image by default (``patch`` = S / 4), mean-pooled.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillInputError
from distill.gpt import GPT
from distill.vit import ViT


def _require_positive(arch: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise DistillInputError(f"{arch}: {name} must be a positive integer, got {value}")


class MLP(nn.Sequential):
    """Flatten, then ``Linear-ReLU`` for each hidden size, then a linear classifier."""

    def __init__(self, input_dim: int, hidden: Sequence[int], num_classes: int) -> None:
        sizes = [input_dim, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        super().__init__(*layers)


def mlp(*, input_dim: int = 40, hidden: tuple[int, ...] = (100, 100), num_classes: int = 10) -> MLP:
    """ReLU MLP on flattened inputs; PyTorch's default ``nn.Linear`` initialisation.

    Args:
        input_dim: Number of input features after flattening (40 for MNIST-1D, 64 for digits).
        hidden: Hidden layer widths; empty gives multinomial logistic regression.
        num_classes: Number of output logits.
    """
    _require_positive("mlp", input_dim=input_dim, num_classes=num_classes)
    _require_positive("mlp", **{f"hidden[{i}]": width for i, width in enumerate(hidden)})
    return MLP(input_dim, tuple(hidden), num_classes)


class CNN1D(nn.Module):
    """``conv(k5,p2)-ReLU-conv(k3,p1,s2)-ReLU-conv(k3,p1,s2)-ReLU-linear``, no BatchNorm."""

    def __init__(self, in_channels: int, input_length: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, width, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, kernel_size=3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv1d(width, width, kernel_size=3, padding=1, stride=2),
            nn.ReLU(),
        )
        # Each stride-2 convolution maps length L to ceil(L / 2).
        out_length = math.ceil(math.ceil(input_length / 2) / 2)
        self.classifier = nn.Linear(width * out_length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of 1D signals, ``(n, length)`` or ``(n, channels, length)``."""
        if x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).flatten(1))


def cnn1d(
    *, input_length: int = 40, in_channels: int = 1, width: int = 32, num_classes: int = 10
) -> CNN1D:
    """The MNIST-1D CNN of the calibration study: 9,610 parameters at the defaults.

    Input shape ``(N, input_length)`` (when ``in_channels == 1``) or
    ``(N, in_channels, input_length)``. PyTorch's default layer initialisation, as in the
    MNIST-1D reference models.

    Args:
        input_length: Length of the 1D signal (40 for MNIST-1D).
        in_channels: Input channels.
        width: Channels of every convolution.
        num_classes: Number of output logits.
    """
    _require_positive(
        "cnn1d",
        input_length=input_length,
        in_channels=in_channels,
        width=width,
        num_classes=num_classes,
    )
    return CNN1D(in_channels, input_length, width, num_classes)


class LeNet(nn.Module):
    """``conv5x5(6)-ReLU-pool-conv5x5(16)-ReLU-pool-fc120-ReLU-fc84-ReLU-fc``, 'same' padding."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images."""
        return self.classifier(self.features(x).flatten(1))


def lenet(*, in_channels: int = 1, input_size: int = 8, num_classes: int = 10) -> LeNet:
    """LeNet-5 style CNN with ReLU and max-pooling for square images, (N, C, S, S).

    Padding keeps the 5x5 convolutions usable on the 8x8 digits. PyTorch's default
    layer initialisation.

    Args:
        in_channels: Input channels C.
        input_size: Image side S; at least 4 (two 2x2 poolings).
        num_classes: Number of output logits.
    """
    _require_positive("lenet", in_channels=in_channels, num_classes=num_classes)
    if input_size < 4:
        raise DistillInputError(f"lenet: input_size must be at least 4, got {input_size}")
    return LeNet(in_channels, input_size, num_classes)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: take every ``stride``-th pixel and zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample by the stride and zero-pad the new channels (option-A shortcut)."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut: ``relu(bn(conv(relu(bn(conv(x))))) + s(x))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 conv-BN-ReLU stem, stages of BasicBlocks, global average pool, linear classifier.

    The first stage keeps the resolution, each later one halves it. Weights follow He et
    al.: Kaiming-normal (fan-in, ReLU gain) for every conv and linear weight, as in the
    widely used reference CIFAR implementation (akamaster/pytorch_resnet_cifar10);
    BatchNorm starts at gamma = 1, beta = 0.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        in_channels: int,
        num_classes: int,
        shortcut: str,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride, shortcut)]
            stage += [BasicBlock(width, width, 1, shortcut) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images."""
        out = self.stages(self.stem(x))
        return self.fc(self.pool(out).flatten(1))


def _cifar_resnet(
    depth: int, in_channels: int, num_classes: int, width: int, shortcut: str
) -> ResNet:
    arch = f"resnet{depth}"
    _require_positive(arch, in_channels=in_channels, num_classes=num_classes, width=width)
    if shortcut not in ("A", "B"):
        raise DistillInputError(f"{arch}: shortcut must be 'A' or 'B', got {shortcut!r}")
    n = (depth - 2) // 6
    return ResNet((n, n, n), (width, 2 * width, 4 * width), in_channels, num_classes, shortcut)


def resnet20(
    *, in_channels: int = 3, num_classes: int = 10, width: int = 16, shortcut: str = "A"
) -> ResNet:
    """CIFAR ResNet-20 of He et al. 2016, section 4.2: 3 stages of 3 BasicBlocks.

    The default shortcut is option A, the paper's (and PyHessian's): identity, and at a
    stage change stride-2 subsampling plus zero-padded channels, no parameters
    (269,722 parameters with 10 classes). Option B uses a 1x1 convolution + BatchNorm
    there instead, as RepDistiller's and torchdistill's "resnet20" do. Input
    (N, in_channels, H, W), 32x32 for CIFAR; global average pooling accepts any H, W.

    Args:
        in_channels: Input channels.
        num_classes: Number of output logits.
        width: Channels of the first stage; the others use 2x and 4x (16 in the paper).
        shortcut: "A" (default) or "B".
    """
    return _cifar_resnet(20, in_channels, num_classes, width, shortcut)


def resnet32(
    *, in_channels: int = 3, num_classes: int = 10, width: int = 16, shortcut: str = "A"
) -> ResNet:
    """CIFAR ResNet-32: as :func:`resnet20` (option-A default) with 5 blocks per stage."""
    return _cifar_resnet(32, in_channels, num_classes, width, shortcut)


def resnet56(
    *, in_channels: int = 3, num_classes: int = 10, width: int = 16, shortcut: str = "A"
) -> ResNet:
    """CIFAR ResNet-56: as :func:`resnet20` (option-A default) with 9 blocks per stage."""
    return _cifar_resnet(56, in_channels, num_classes, width, shortcut)


def resnet18(*, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> ResNet:
    """CIFAR ResNet-18: 3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2] of 64-128-256-512.

    Shortcuts at a stage change are a 1x1 convolution + BatchNorm (option B), as in the
    common CIFAR variant (kuangliu/pytorch-cifar). Input (N, in_channels, 32, 32).

    Args:
        in_channels: Input channels.
        num_classes: Number of output logits.
        width: Channels of the first stage; the others use 2x, 4x and 8x.
    """
    _require_positive("resnet18", in_channels=in_channels, num_classes=num_classes, width=width)
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ResNet((2, 2, 2, 2), widths, in_channels, num_classes, shortcut="B")


# Channels per conv layer as multiples of ``width``; a 2x2 max-pool follows every stage
# but the last (RepDistiller's CIFAR VGG configs).
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((1,), (2,), (4,), (8,), (8,)),
    "vgg11": ((1,), (2,), (4, 4), (8, 8), (8, 8)),
    "vgg13": ((1, 1), (2, 2), (4, 4), (8, 8), (8, 8)),
    "vgg16": ((1, 1), (2, 2), (4, 4, 4), (8, 8, 8), (8, 8, 8)),
}


class VGG(nn.Module):
    """Stages of ``conv3x3-BN-ReLU`` with max-pooling between them, global average pool, linear.

    Pooling uses ``ceil_mode`` so inputs as small as 8x8 pass every stage; the final
    adaptive average pool makes the classifier independent of the input size. Convs have
    no bias (BatchNorm follows). Init as RepDistiller/torchvision: Kaiming-normal
    (fan-out, ReLU) convs, BatchNorm 1/0, linear weights N(0, 0.01^2) and zero bias.
    """

    def __init__(
        self, stages: Sequence[Sequence[int]], in_channels: int, width: int, num_classes: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, stage in enumerate(stages):
            if index > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for multiple in stage:
                out = multiple * width
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)]
                layers.append(nn.ReLU())
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of images."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg(
    *, config: str = "vgg8", in_channels: int = 3, num_classes: int = 10, width: int = 64
) -> VGG:
    """CIFAR-style VGG with BatchNorm and a single linear classifier, input (N, C, H, W).

    Args:
        config: One of ``vgg8`` (5 convs, default), ``vgg11``, ``vgg13``, ``vgg16``.
        in_channels: Input channels.
        num_classes: Number of output logits.
        width: Channels of the first stage; later stages use 2x, 4x, 8x, 8x.
    """
    if config not in VGG_CONFIGS:
        known = ", ".join(VGG_CONFIGS)
        raise DistillInputError(f"vgg: unknown config {config!r}; known: {known}")
    _require_positive("vgg", in_channels=in_channels, num_classes=num_classes, width=width)
    return VGG(VGG_CONFIGS[config], in_channels, width, num_classes)


def gpt(
    *, num_classes: int = 16, context: int = 32, width: int = 32, layers: int = 2, heads: int = 2
) -> GPT:
    """A tiny GPT: ``layers`` pre-norm blocks of ``width`` with ``heads`` heads."""
    _require_positive("gpt", num_classes=num_classes, context=context, width=width,
                      layers=layers, heads=heads)  # fmt: skip
    if width % heads:
        raise DistillInputError(f"gpt: width {width} must be a multiple of heads {heads}")
    return GPT(num_classes, context, width, layers, heads)


def vit(
    *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, patch: int = 8,
    width: int = 32, layers: int = 2, heads: int = 2,
) -> ViT:  # fmt: skip
    """A tiny ViT: ``(image_size / patch)^2`` patches, ``layers`` pre-norm blocks of ``width``."""
    _require_positive("vit", num_classes=num_classes, in_channels=in_channels,
                      image_size=image_size, patch=patch, width=width, layers=layers,
                      heads=heads)  # fmt: skip
    if image_size % patch:
        raise DistillInputError(f"vit: patch {patch} must divide image_size {image_size}")
    if width % heads:
        raise DistillInputError(f"vit: width {width} must be a multiple of heads {heads}")
    return ViT(num_classes, in_channels, image_size, patch, width, layers, heads)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn1d": cnn1d,
    "lenet": lenet,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet18": resnet18,
    "vgg": vgg,
    "gpt": gpt,
    "vit": vit,
}


def _constructor(arch: str) -> Callable[..., nn.Module]:
    if arch not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise DistillInputError(f"unknown architecture {arch!r}; known: {known}")
    return ARCHITECTURES[arch]


def _json_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def model_kwargs_defaults(arch: str) -> dict[str, object]:
    """Every keyword argument of ``arch`` with its default, JSON-ready (tuples as lists)."""
    parameters = inspect.signature(_constructor(arch)).parameters
    return {name: _json_value(p.default) for name, p in parameters.items()}


MAX_LIST = 1024  # entries of a list argument (layers): more is a lie, and slow even on meta


def _check_type(arch: str, name: str, value: object, default: object) -> None:
    if isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an int"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        kind = "a list of ints"
        if ok and len(value) > MAX_LIST:
            raise DistillInputError(
                f"{arch}: {name} has {len(value)} entries; at most {MAX_LIST} are accepted"
            )
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise DistillInputError(f"{arch}: {name} must be {kind}, got {shown}")


def resolve_model_kwargs(arch: str, /, **kwargs: object) -> dict[str, object]:
    """The full keyword arguments ``build_model(arch, **kwargs)`` uses: defaults plus overrides.

    This is what a checkpoint records; the result is JSON-ready and
    ``build_model(arch, **resolve_model_kwargs(arch, **kwargs))`` builds the same network.

    Raises:
        DistillInputError: Unknown architecture, unknown keyword or a value of the wrong type.
    """
    resolved = model_kwargs_defaults(arch)
    for name, value in kwargs.items():
        if name not in resolved:
            accepted = ", ".join(resolved)
            raise DistillInputError(
                f"architecture {arch!r} has no keyword argument {name!r}; accepted: {accepted}"
            )
        _check_type(arch, name, value, resolved[name])
        resolved[name] = _json_value(value)
    return resolved


def build_model(arch: str, /, **kwargs: object) -> nn.Module:
    """Build architecture ``arch`` (a key of ``ARCHITECTURES``) with keyword overrides.

    Raises:
        DistillInputError: Unknown architecture, unknown keyword, or a bad value.
    """
    return _constructor(arch)(**resolve_model_kwargs(arch, **kwargs))


def input_kwargs(arch: str, input_shape: Sequence[int]) -> dict[str, int]:
    """The keyword arguments that fit ``arch`` to one example's shape (no batch dimension).

    ``mlp`` gets ``input_dim`` (the product of the shape); ``cnn1d`` gets
    ``input_length`` and ``in_channels`` from (L,) or (C, L); ``lenet`` gets
    ``in_channels`` and ``input_size`` from a square (C, S, S); the ResNets and VGG get
    ``in_channels`` from (C, H, W).

    Raises:
        DistillInputError: The shape does not suit the architecture.
    """
    _constructor(arch)
    shape = tuple(int(d) for d in input_shape)
    if arch == "mlp":
        return {"input_dim": math.prod(shape)}
    if arch == "cnn1d" and len(shape) in (1, 2):
        return {"input_length": shape[-1], "in_channels": 1 if len(shape) == 1 else shape[0]}
    if arch == "gpt" and len(shape) == 1:
        return {"context": shape[0]}
    if arch == "lenet" and len(shape) == 3 and shape[1] == shape[2]:
        return {"in_channels": shape[0], "input_size": shape[1]}
    if arch == "vit" and len(shape) == 3 and shape[1] == shape[2] and shape[1] % 4 == 0:
        return {"in_channels": shape[0], "image_size": shape[1], "patch": shape[1] // 4}
    if arch not in ("cnn1d", "lenet", "gpt", "vit") and len(shape) == 3:
        return {"in_channels": shape[0]}
    expected = {"cnn1d": "(L,) or (C, L)", "lenet": "square (C, S, S)",
                "gpt": "(L,) token ids",
                "vit": "square (C, S, S), S a multiple of 4"}.get(arch, "(C, H, W)")  # fmt: skip
    raise DistillInputError(
        f"architecture {arch!r} needs inputs of shape {expected}, but the data has {shape}; "
        "pick an architecture that suits the dataset (mlp takes any shape)"
    )


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
