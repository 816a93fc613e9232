"""Permutation specs: which axes of which tensors each permutation of hidden units acts on.

A network's hidden units can be reordered without changing its function, provided every
tensor that touches them is reordered alike: a layer's output rows (weight axis 0, bias,
BatchNorm's weight, bias and running statistics) and the next layer's input columns
(weight axis 1). A :class:`PermutationSpec` lists, for each permutation *group*, those
tensor axes (:class:`UnitAxis`). Unit ``i`` of a group occupies, along the axis, the
``block`` consecutive positions starting at ``(offset + i) * block``: ``block > 1`` where a
feature map is flattened into a linear layer (each channel is ``block`` inputs), ``offset``
where a group fills only part of an axis (channels zero-padded by a shortcut).

A permutation ``perm`` of a group (a ``LongTensor`` of its ``size``) puts unit ``perm[i]``
of the original at position ``i`` (:func:`apply_permutations`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.errors import LandscapeInputError


class UnpermutableModelError(LandscapeInputError):
    """A model (or a spec) whose hidden units cannot be permuted safely; names the module."""


@dataclass(frozen=True)
class UnitAxis:
    """One axis of one tensor that a permutation group acts on.

    Attributes:
        name: The tensor's ``state_dict`` key (``"features.0.weight"``).
        axis: The axis of that tensor.
        offset: Units before this group along the axis (in units of ``block``).
        block: Consecutive positions per unit (a flattened channel's spatial size).
    """

    name: str
    axis: int
    offset: int = 0
    block: int = 1

    def positions(self, size: int) -> Tensor:
        """The axis positions of the group's units, ``(size, block)``: row ``i`` is unit ``i``."""
        start = (self.offset + torch.arange(size)) * self.block
        return start[:, None] + torch.arange(self.block)[None, :]


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation groups of a model: each group's size and the tensor axes it acts on.

    Build one from plain data with :meth:`from_groups`, or derive one from a model's
    graph with :func:`landscape.pairs.graph_spec.permutation_spec`.
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[UnitAxis, ...]]

    @classmethod
    def from_groups(
        cls, groups: Mapping[str, list], state: Mapping[str, Tensor]
    ) -> PermutationSpec:
        """A spec from plain data, checked against a ``state_dict``.

        Args:
            groups: ``{group: [[tensor name, axis], [name, axis, block], ...]}`` (lists or
                tuples; ``block`` as in :class:`UnitAxis`, default 1).
            state: The model's ``state_dict``; gives the groups' sizes.

        Raises:
            UnpermutableModelError: An unknown tensor, an axis out of range, an axis
                claimed twice, or axes of one group that disagree on its size.
        """
        sizes, axes = {}, {}
        for group, entries in groups.items():
            unit_axes = tuple(_unit_axis(group, entry) for entry in entries)
            if not unit_axes:
                raise UnpermutableModelError(f"permutation group {group!r} lists no tensor axis")
            first = unit_axes[0]
            sizes[group] = _axis_length(group, first, state) // first.block
            axes[group] = unit_axes
        spec = cls(sizes, axes)
        spec.check(state)
        return spec

    def to_groups(self) -> dict[str, list[list]]:
        """The spec as plain data (JSON-ready): the inverse of :meth:`from_groups`."""
        return {
            group: [[a.name, a.axis, a.offset, a.block] for a in unit_axes]
            for group, unit_axes in self.axes.items()
        }

    def check(self, state: Mapping[str, Tensor]) -> None:
        """Refuse a spec that does not fit ``state`` (see :meth:`from_groups`)."""
        claimed: dict[tuple[str, int, int], str] = {}
        for group, unit_axes in self.axes.items():
            size = self.sizes[group]
            for unit_axis in unit_axes:
                length = _axis_length(group, unit_axis, state)
                end = (unit_axis.offset + size) * unit_axis.block
                if unit_axis.offset < 0 or end > length:
                    raise UnpermutableModelError(
                        f"permutation group {group!r}: {size} units of {unit_axis.block} do not "
                        f"fit axis {unit_axis.axis} of {unit_axis.name} (length {length})"
                    )
                for position in range(unit_axis.offset, unit_axis.offset + size):
                    key = (unit_axis.name, unit_axis.axis, position)
                    if key in claimed:
                        raise UnpermutableModelError(
                            f"axis {unit_axis.axis} of {unit_axis.name} is permuted by groups "
                            f"{claimed[key]!r} and {group!r}; give each position one group"
                        )
                    claimed[key] = group

    def by_tensor(self) -> dict[str, list[tuple[str, UnitAxis]]]:
        """For each tensor name, the groups acting on it and where."""
        found: dict[str, list[tuple[str, UnitAxis]]] = {}
        for group, unit_axes in self.axes.items():
            for unit_axis in unit_axes:
                found.setdefault(unit_axis.name, []).append((group, unit_axis))
        return found


def _unit_axis(group: str, entry: object) -> UnitAxis:
    if isinstance(entry, UnitAxis):
        return entry
    ok = isinstance(entry, list | tuple) and 2 <= len(entry) <= 4 and isinstance(entry[0], str)
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry[1:]):
        raise UnpermutableModelError(
            f"permutation group {group!r}: entry {entry!r} is not [tensor name, axis] or "
            "[name, axis, offset, block]"
        )
    if len(entry) == 3:  # [name, axis, block]: a flattened feature map
        return UnitAxis(entry[0], entry[1], 0, entry[2])
    return UnitAxis(*entry)


def _axis_length(group: str, unit_axis: UnitAxis, state: Mapping[str, Tensor]) -> int:
    if unit_axis.name not in state:
        raise UnpermutableModelError(
            f"permutation group {group!r}: the model has no tensor {unit_axis.name!r}"
        )
    shape = state[unit_axis.name].shape
    if not 0 <= unit_axis.axis < len(shape) or unit_axis.block < 1:
        raise UnpermutableModelError(
            f"permutation group {group!r}: {unit_axis.name} has shape {tuple(shape)}, no axis "
            f"{unit_axis.axis} with blocks of {unit_axis.block}"
        )
    return shape[unit_axis.axis]


def permute_axis(tensor: Tensor, unit_axis: UnitAxis, perm: Tensor) -> Tensor:
    """``tensor`` with the units of one group reordered by ``perm`` along ``unit_axis``."""
    positions = unit_axis.positions(len(perm)).to(tensor.device)
    taken = tensor.index_select(unit_axis.axis, positions[perm.to(tensor.device)].reshape(-1))
    return tensor.index_copy(unit_axis.axis, positions.reshape(-1), taken)


def apply_permutations(
    state: Mapping[str, Tensor], spec: PermutationSpec, perms: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """A new ``state_dict`` with every group of ``spec`` reordered by its permutation.

    Groups missing from ``perms`` stay as they are; tensors no group touches are shared.
    """
    permuted = dict(state)
    for name, acting in spec.by_tensor().items():
        tensor = state[name]
        for group, unit_axis in acting:
            if group in perms:
                tensor = permute_axis(tensor, unit_axis, perms[group])
        permuted[name] = tensor
    return permuted


def random_permutations(spec: PermutationSpec, generator: torch.Generator) -> dict[str, Tensor]:
    """A uniformly random permutation of every group (for tests and null baselines)."""
    return {group: torch.randperm(size, generator=generator) for group, size in spec.sizes.items()}
