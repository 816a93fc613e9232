"""A model's permutation groups, derived from its ``torch.fx`` graph.

Walks the traced graph and follows, for every value, which permutation groups its
feature axis carries (the channel axis 1 after a convolution, the last axis after a
linear layer). A Linear, Conv1d/Conv2d or Embedding starts a new group on its outputs;
elementwise activations, dropout, pooling, BatchNorm and LayerNorm pass it on (and
permute their own parameters and running statistics with it); ``flatten(1)`` turns a
channel into a block of inputs of the next linear layer; an elementwise add or multiply
ties the groups of its operands (the residual stream of a ResNet is one group), and a
shortcut that zero-pads channels makes a group of the new channels. The model's inputs
and outputs are never permuted: a group that reaches them is dropped.

Anything else a permuted value flows into (attention, reshapes, concatenation, a layer
this walk does not know) is refused in one line naming the module: pass the groups as a
spec instead (:meth:`PermutationSpec.from_groups`).

One assumption without shapes: a linear layer's output feeding a BatchNorm1d is taken
to be 2D (``(N, features)``), as BatchNorm1d after a linear layer is used.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from landscape._types import in_analysis_mode
from landscape.pairs.permutation import PermutationSpec, UnitAxis, UnpermutableModelError

Layout = tuple[tuple[int, int], ...]
"""The groups along a feature axis: ``(group, offset)`` pieces covering the whole axis."""

ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid,
    nn.Softplus, nn.Mish, nn.Hardtanh, nn.Hardswish, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d,
)  # fmt: skip
POOLING_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.elu, F.leaky_relu, F.softplus, F.mish,
    F.hardtanh, F.dropout, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh, operator.neg,
}  # fmt: skip
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "neg", "float",
                       "double", "to"}  # fmt: skip
POOLING_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}  # fmt: skip
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                    torch.add, torch.sub, torch.mul}  # fmt: skip
BINARY_METHODS = {"add", "sub", "mul", "div"}
FLATTEN_FUNCTIONS = {torch.flatten}
REDUCTIONS = {"mean", "sum", "amax"}
NOT_TENSORS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"}
"""Attributes of a tensor that are not tensors (``x.T`` is one, and is refused)."""


@dataclass(frozen=True)
class _Value:
    """A tensor of the graph: its feature axis (1 or -1), rank if known, and groups."""

    layout: Layout | None
    axis: int = -1
    rank: int | None = None
    flattened: bool = False  # channels became blocks of the last axis; block size unknown

    def on_axis(self, axis: int) -> bool:
        """Whether the groups sit on ``axis`` (1 or -1); a 2D tensor's axes 1 and -1 agree."""
        if self.layout is None or self.axis == axis:
            return True
        # without a rank, a linear layer's output before BatchNorm1d is taken as 2D
        return self.rank == 2 or (axis == 1 and self.rank is None)


@dataclass
class _Groups:
    """Union-find over permutation groups; a group may be expanded into pieces or frozen."""

    sizes: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    expansion: dict[int, Layout] = field(default_factory=dict)
    frozen: set[int] = field(default_factory=set)

    def new(self, size: int, name: str) -> Layout:
        """A fresh group of ``size`` units named ``name``, as a layout."""
        self.sizes.append(size)
        self.names.append(name)
        self.parent.append(len(self.parent))
        return ((len(self.parent) - 1, 0),)

    def find(self, group: int) -> int:
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def resolve(self, layout: Layout) -> Layout:
        """The layout in root groups, expanded groups replaced by their pieces."""
        pieces: list[tuple[int, int]] = []
        for group, offset in layout:
            root = self.find(group)
            if root in self.expansion:
                pieces += [(g, offset + o) for g, o in self.resolve(self.expansion[root])]
            else:
                pieces.append((root, offset))
        return tuple(pieces)

    def length(self, layout: Layout) -> int:
        return sum(self.sizes[self.find(group)] for group, _ in self.resolve(layout))

    def freeze(self, layout: Layout | None) -> None:
        """The groups of ``layout`` stay as they are (they reach an input or an output)."""
        for group, _ in self.resolve(layout or ()):
            self.frozen.add(group)

    def tie(self, first: Layout | None, second: Layout | None, where: str) -> None:
        """Make two layouts one: their values are added, or share a tensor axis."""
        if first is None or second is None:
            self.freeze(first if second is None else second)
            return
        first, second = self.resolve(first), self.resolve(second)
        if first == second:
            return
        if self.length(first) != self.length(second):
            raise UnpermutableModelError(f"{where}: joins features of different sizes")
        if len(first) > 1 and len(second) == 1:
            first, second = second, first
        if len(first) == 1:
            self._replace(first[0][0], second)
        elif [o for _, o in first] == [o for _, o in second]:
            for (a, _), (b, _) in zip(first, second, strict=True):
                self.tie(((a, 0),), ((b, 0),), where)
        else:
            raise UnpermutableModelError(f"{where}: joins channels grouped in different ways")

    def _replace(self, group: int, layout: Layout) -> None:
        if len(layout) == 1:
            other = layout[0][0]
            low, high = sorted((group, other))  # the first-made group names the union
            self.parent[high] = low
            if high in self.frozen:
                self.frozen.add(low)
        else:
            self.expansion[group] = layout
            if group in self.frozen:
                self.freeze(layout)


class _GraphWalk:
    """One pass over a traced graph, recording which groups act on which tensor axes."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self.model = model
        self.graph = graph
        self.modules = dict(model.named_modules())
        self.groups = _Groups()
        self.values: dict[fx.Node, _Value | None] = {}
        self.records: dict[tuple[str, int], tuple[Layout, int]] = {}
        self.tensor_names = set(model.state_dict())
        self.used_directly: dict[str, fx.Node] = {}  # tensors read outside their module

    def run(self) -> PermutationSpec:
        for node in self.graph.nodes:
            self.values[node] = self._visit(node)
        return self._spec()

    # -- nodes --------------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> _Value | None:
        if node.op == "get_attr":
            self.used_directly.setdefault(str(node.target), node)
        if node.op in ("placeholder", "get_attr"):
            return _Value(None)
        if node.op == "output":
            for value in self._inputs(node):
                self.groups.freeze(value.layout)
            return None
        if node.op == "call_module":
            return self._module(node, self.modules[node.target])
        if node.op == "call_method":
            return self._method(node)
        return self._function(node)

    def _inputs(self, node: fx.Node) -> list[_Value]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), found.append)
        return [v for v in (self.values.get(n) for n in found) if v is not None]

    def _permuted_inputs(self, node: fx.Node) -> bool:
        return any(value.layout is not None for value in self._inputs(node))

    def _first(self, node: fx.Node) -> _Value:
        first = node.args[0] if node.args else None
        value = self.values.get(first) if isinstance(first, fx.Node) else None
        return value if isinstance(value, _Value) else _Value(None)

    def _refuse(self, node: fx.Node, what: str) -> UnpermutableModelError:
        stack = list(node.meta.get("nn_module_stack", {}).values())
        module = node.target if node.op == "call_module" else (stack[-1][0] if stack else "")
        where = f"module {module!r}" if module else "the model's forward"
        return UnpermutableModelError(
            f"cannot permute hidden units through {what} in {where} of "
            f"{type(self.model).__name__}; pass spec= with its permutation groups"
        )

    def _unknown(self, node: fx.Node, what: str) -> _Value | None:
        """An op this walk does not know: refused when a permuted value flows into it."""
        if self._permuted_inputs(node):
            raise self._refuse(node, what)
        return _Value(None) if node.op != "call_function" or self._inputs(node) else None

    # -- modules ------------------------------------------------------------------------------

    def _module(self, node: fx.Node, module: nn.Module) -> _Value | None:
        value, name = self._first(node), str(node.target)
        if isinstance(module, ELEMENTWISE_MODULES):
            return value
        if isinstance(module, POOLING_MODULES):
            return self._channel_op(node, value)
        if isinstance(module, nn.Linear):
            return self._linear(node, value, name, module)
        if isinstance(module, nn.Conv1d | nn.Conv2d) and module.groups == 1:
            return self._conv(node, value, name, module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return self._norm(node, value, name, ("weight", "bias", "running_mean",
                                                  "running_var"), 1)  # fmt: skip
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            return self._norm(node, value, name, ("weight", "bias"), -1)
        if isinstance(module, nn.Embedding):
            out = self.groups.new(module.embedding_dim, name)
            self._record(f"{name}.weight", 1, out)
            return _Value(out, -1)
        if isinstance(module, nn.Flatten):
            return self._flatten(node, value, module.start_dim, module.end_dim)
        return self._unknown(node, f"{type(module).__name__}")

    def _linear(self, node: fx.Node, value: _Value, name: str, module: nn.Linear) -> _Value:
        if not value.on_axis(-1):
            raise self._refuse(node, "a linear layer on a non-feature axis")
        if value.layout is not None:
            length = self.groups.length(value.layout)
            block = module.in_features // length if value.flattened else 1
            if length * block != module.in_features:
                raise self._refuse(node, f"{module.in_features} inputs from {length} channels")
            self._record(f"{name}.weight", 1, value.layout, block)
        out = self.groups.new(module.out_features, name)
        self._record(f"{name}.weight", 0, out)
        self._record(f"{name}.bias", 0, out)
        return _Value(out, -1, value.rank if not value.flattened else 2)

    def _conv(self, node: fx.Node, value: _Value, name: str, module: nn.Module) -> _Value:
        if not value.on_axis(1) or value.flattened:
            raise self._refuse(node, "a convolution on a non-channel axis")
        if value.layout is not None:
            self._record(f"{name}.weight", 1, value.layout)
        out = self.groups.new(module.out_channels, name)
        self._record(f"{name}.weight", 0, out)
        self._record(f"{name}.bias", 0, out)
        return _Value(out, 1, 3 if isinstance(module, nn.Conv1d) else 4)

    def _norm(self, node: fx.Node, value: _Value, name: str, tensors: tuple, axis: int) -> _Value:
        if not value.on_axis(axis) or value.flattened:
            raise self._refuse(node, "a normalisation on a non-feature axis")
        for tensor in tensors:
            self._record(f"{name}.{tensor}", 0, value.layout)
        return value

    def _channel_op(self, node: fx.Node, value: _Value) -> _Value:
        """Pooling: acts on the axes after the channels, which it passes on."""
        if value.layout is not None and (value.axis != 1 or value.flattened):
            raise self._refuse(node, "pooling over the feature axis")
        return value

    def _flatten(self, node: fx.Node, value: _Value, start: int, end: int) -> _Value:
        if value.layout is None or (start == 1 and value.rank == 2):
            return value
        if start == 1 and end == -1 and value.axis == 1 and not value.flattened:
            return _Value(value.layout, -1, 2, flattened=True)
        raise self._refuse(node, f"flatten({start}, {end}) of permuted channels")

    # -- functions and methods ----------------------------------------------------------------

    def _function(self, node: fx.Node) -> _Value | None:
        target = node.target
        if target in ELEMENTWISE_FUNCTIONS:
            return self._first(node)
        if target in POOLING_FUNCTIONS:
            return self._channel_op(node, self._first(node))
        if target in BINARY_FUNCTIONS:
            return self._binary(node)
        if target in FLATTEN_FUNCTIONS:
            return self._flatten_call(node)
        if target is operator.getitem:
            return self._getitem(node)
        if target is F.pad:
            return self._pad(node)
        if target is getattr:
            attribute = node.args[1]
            return None if attribute in NOT_TENSORS else self._unknown(node, f"x.{attribute}")
        return self._unknown(node, getattr(target, "__name__", str(target)))

    def _method(self, node: fx.Node) -> _Value | None:
        if node.target in ELEMENTWISE_METHODS:
            return self._first(node)
        if node.target in BINARY_METHODS:
            return self._binary(node)
        if node.target == "flatten":
            return self._flatten_call(node)
        if node.target in ("view", "reshape") and self._is_batch_flatten(node):
            return self._flatten(node, self._first(node), 1, -1)
        if node.target in REDUCTIONS:
            return self._reduce(node)
        if node.target in ("size", "dim"):
            return None
        return self._unknown(node, f".{node.target}()")

    def _binary(self, node: fx.Node) -> _Value:
        """An elementwise add/sub/mul: tensors added together carry the same groups."""
        operands = [self.values.get(a) for a in node.args[:2] if isinstance(a, fx.Node)]
        tensors = [v for v in operands if isinstance(v, _Value)]
        if len(tensors) < 2:
            return tensors[0] if tensors else _Value(None)
        first, second = tensors
        permuted = [v for v in tensors if v.layout is not None]
        if len(permuted) == 2 and (first.axis != second.axis or first.flattened
                                   or second.flattened):  # fmt: skip
            raise self._refuse(node, "an elementwise op on differently laid out tensors")
        self.groups.tie(first.layout, second.layout, f"node {node.name!r}")
        return permuted[0] if permuted else first

    def _is_batch_flatten(self, node: fx.Node) -> bool:
        """``x.view(x.size(0), -1)``: flatten(1) spelled as a reshape."""
        shape = node.args[1:] if len(node.args) != 2 else node.args[1]
        if not isinstance(shape, tuple | list) or len(shape) != 2 or shape[1] != -1:
            return False
        batch = shape[0]
        return isinstance(batch, fx.Node) and (
            (batch.op == "call_method" and batch.target == "size" and batch.args[1:] == (0,))
            or (batch.target is operator.getitem and batch.args[1] == 0)
        )

    def _reduce(self, node: fx.Node) -> _Value:
        """``x.mean((2, 3))``: a reduction over axes after the channels passes them on."""
        value = self._first(node)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else dims
        if value.layout is None:
            return value
        ok = value.axis == 1 and not value.flattened and isinstance(dims, tuple | list)
        if not ok or not all(isinstance(d, int) and d >= 2 for d in dims):
            raise self._refuse(node, f".{node.target}() over the feature axis")
        keep = node.kwargs.get("keepdim", len(node.args) > 2 and node.args[2])
        rank = value.rank if keep or value.rank is None else value.rank - len(set(dims))
        return _Value(value.layout, 1, rank)

    def _flatten_call(self, node: fx.Node) -> _Value:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return self._flatten(node, self._first(node), start, end)

    def _getitem(self, node: fx.Node) -> _Value | None:
        if not isinstance(node.args[0], fx.Node):
            return None
        value = self.values.get(node.args[0])
        if not isinstance(value, _Value):
            return _Value(None)
        if value.layout is None:
            return value
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        whole = slice(None)
        leading = value.axis == 1 and len(index) >= 2 and index[0] == index[1] == whole
        if leading and all(isinstance(i, slice) for i in index):
            return value
        raise self._refuse(node, "indexing that touches the feature axis")

    def _pad(self, node: fx.Node) -> _Value:
        """Zero-padded channels (an option-A shortcut) form groups of their own."""
        value = self._first(node)
        pad = tuple(node.args[1] if len(node.args) > 1 else node.kwargs["pad"])
        if value.layout is None:
            return value
        axis = value.rank - 2 if value.axis == 1 and value.rank else 0 if value.axis == -1 else None
        if axis is None or value.flattened:
            raise self._refuse(node, "padding of a tensor of unknown rank")
        before, after = (pad[2 * axis : 2 * axis + 2] + (0, 0))[:2]
        if before == after == 0:
            return value
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        if mode != "constant" or before < 0 or after < 0:
            raise self._refuse(node, f"{mode} padding of the feature axis")
        name = node.meta.get("nn_module_stack", {})
        owner = list(name.values())[-1][0] if name else node.name
        length = self.groups.length(value.layout)
        pieces = list(self.groups.resolve(value.layout))
        layout = [(g, o + before) for g, o in pieces]
        if before:
            layout.insert(0, self.groups.new(before, f"{owner}.pad_before")[0])
        if after:
            layout.append((self.groups.new(after, f"{owner}.pad_after")[0][0], before + length))
        return _Value(tuple(layout), value.axis, value.rank)

    # -- tensors ------------------------------------------------------------------------------

    def _record(self, name: str, axis: int, layout: Layout | None, block: int = 1) -> None:
        if name not in self.tensor_names or layout is None:
            return
        key = (name, axis)
        if key in self.records:  # a module called twice: both calls share its tensors
            old, old_block = self.records[key]
            if old_block != block:
                raise UnpermutableModelError(f"{name} is used with two layouts")
            self.groups.tie(old, layout, name)
            return
        self.records[key] = (layout, block)

    def _spec(self) -> PermutationSpec:
        sizes: dict[str, int] = {}
        axes: dict[str, list[UnitAxis]] = {}
        for (name, axis), (layout, block) in self.records.items():
            for group, offset in self.groups.resolve(layout):
                if group in self.groups.frozen:
                    continue
                if name in self.used_directly:  # e.g. a tied weight: its other use is unknown
                    raise self._refuse(self.used_directly[name], f"a direct use of {name}")
                label = self.groups.names[group]
                sizes[label] = self.groups.sizes[group]
                axes.setdefault(label, []).append(UnitAxis(name, axis, offset, block))
        return PermutationSpec(sizes, {g: tuple(a) for g, a in axes.items()})


@in_analysis_mode
def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation groups of ``model``, derived from its ``torch.fx`` graph.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> permutation_spec(model).sizes
        {'0': 8}

    Raises:
        UnpermutableModelError: The forward cannot be traced, or a permuted value flows
            into something that cannot be permuted (the message names the module).
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 (tracing fails in many ways: each is one line)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnpermutableModelError(
            f"torch.fx cannot trace {type(model).__name__}.forward ({reason[:120]}); pass "
            "spec= with its permutation groups"
        ) from None
    spec = _GraphWalk(model, traced.graph).run()
    spec.check(model.state_dict())
    return spec
