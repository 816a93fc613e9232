"""Permutation groups of the registry models whose forward ``torch.fx`` cannot trace.

Plain data for :meth:`landscape.pairs.PermutationSpec.from_groups` (the study layer passes
it to :func:`landscape.pairs.align_to`): ``{group: [[tensor name, axis], ...]}``, with
``[name, axis, block]`` where a channel becomes ``block`` inputs of a linear layer. Every
other registry model's groups are derived from its graph.

- ``cnn1d``: its forward reshapes a 2D input by ``x.dim()``, which fx cannot trace; each
  convolution's output channels are one group, the last one flattened into the classifier.
- ``gpt``: the residual stream (embeddings, every LayerNorm, the attention's input and
  output projections, the MLPs' input and output, the head) is one group and each MLP's
  hidden units another; attention heads' internal dimensions are not permuted.
- ``vit``: the same, with the patch embedding's output channels and the position
  embedding in the residual stream.
"""

from __future__ import annotations

import math


def declared_permutation_groups(arch: str, arch_kwargs: dict) -> dict[str, list[list]] | None:
    """The groups of ``arch`` built with ``arch_kwargs``, or None where fx derives them."""
    if arch == "cnn1d":
        return _cnn1d(arch_kwargs)
    if arch == "gpt":
        return _gpt(arch_kwargs)
    if arch == "vit":
        return _vit(arch_kwargs)
    return None


def _cnn1d(kwargs: dict) -> dict[str, list[list]]:
    length = math.ceil(math.ceil(int(kwargs.get("input_length", 40)) / 2) / 2)
    groups = {}
    for index, consumer in ((0, "features.2"), (2, "features.4")):
        layer = f"features.{index}"
        groups[layer] = [[f"{layer}.weight", 0], [f"{layer}.bias", 0], [f"{consumer}.weight", 1]]
    groups["features.4"] = [["features.4.weight", 0], ["features.4.bias", 0],
                            ["classifier.weight", 1, length]]  # fmt: skip
    return groups


def _gpt(kwargs: dict) -> dict[str, list[list]]:
    stream = [["tokens.weight", 1], ["positions.weight", 1], ["norm.weight", 0],
              ["norm.bias", 0], ["head.weight", 1]]  # fmt: skip
    return _blocks(stream, int(kwargs.get("layers", 2)))


def _vit(kwargs: dict) -> dict[str, list[list]]:
    stream = [["embed.weight", 0], ["embed.bias", 0], ["positions", 2], ["norm.weight", 0],
              ["norm.bias", 0], ["head.weight", 1]]  # fmt: skip
    return _blocks(stream, int(kwargs.get("layers", 2)))


def _blocks(stream: list[list], layers: int) -> dict[str, list[list]]:
    """The residual ``stream`` joined by every block's entries, and each block's MLP group."""
    groups: dict[str, list[list]] = {"residual": stream}
    for block in range(layers):
        prefix = f"blocks.{block}"
        stream += [[f"{prefix}.{norm}.{t}", 0] for norm in ("norm1", "norm2")
                   for t in ("weight", "bias")]  # fmt: skip
        stream += [[f"{prefix}.attention.qkv.weight", 1], [f"{prefix}.attention.proj.weight", 0],
                   [f"{prefix}.attention.proj.bias", 0], [f"{prefix}.mlp.0.weight", 1],
                   [f"{prefix}.mlp.2.weight", 0], [f"{prefix}.mlp.2.bias", 0]]  # fmt: skip
        groups[f"{prefix}.mlp"] = [[f"{prefix}.mlp.0.weight", 0], [f"{prefix}.mlp.0.bias", 0],
                                   [f"{prefix}.mlp.2.weight", 1]]  # fmt: skip
    return groups
