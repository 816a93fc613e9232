r"""Weight matching: permute a model's hidden units so its weights best match a reference's.

Git Re-Basin's weight matching (Ainsworth et al. 2022, algorithm 2): maximise
:math:`\sum_\ell \langle W^A_\ell, P_\ell W^B_\ell P_{\ell-1}^\top \rangle` over the
permutations :math:`P` of every group, i.e. minimise the distance
:math:`\lVert \theta_A - \pi(\theta_B) \rVert_2` between the parameters, by coordinate
descent: visit the groups in a random order; for one group, with the others held fixed,
the objective is linear in its permutation and its best one is a linear assignment
(:func:`scipy.optimize.linear_sum_assignment`). Stop when no group improves.

A step is kept only when it raises the objective itself (not only its linear part, which
differs when a group acts on two axes of one tensor), so the distance never increases.
Permuting hidden units leaves the function unchanged; BatchNorm's running statistics are
permuted with their channels but do not enter the distance (as in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from landscape._types import in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.pairs.permutation import PermutationSpec, UnitAxis, apply_permutations, permute_axis

MAX_SWEEPS = 100
"""Passes over all groups at most (the paper's default); real models converge in < 20."""


@dataclass(frozen=True)
class Alignment:
    r"""A model aligned to a reference, and the evidence.

    Attributes:
        state_dict: The aligned model's ``state_dict`` (load it into a copy of the model).
        permutations: Per group, the permutation applied: unit ``perm[i]`` moved to ``i``.
        spec: The permutation groups used.
        distance_before: :math:`\lVert \theta_A - \theta_B \rVert_2` over parameters.
        distance_after: The same after alignment (never larger).
        sweeps: Passes over all groups until none improved.
    """

    state_dict: dict[str, Tensor]
    permutations: dict[str, Tensor]
    spec: PermutationSpec
    distance_before: float
    distance_after: float
    sweeps: int

    def to_dict(self) -> dict[str, object]:
        """The numbers and the permutations as plain data (JSON-ready)."""
        return {
            "distance_before": self.distance_before,
            "distance_after": self.distance_after,
            "sweeps": self.sweeps,
            "groups": len(self.spec.sizes),
            "permuted_units": sum(self.spec.sizes.values()),
        }


@in_analysis_mode
def align_to(
    model: nn.Module,
    reference: nn.Module | Mapping[str, Tensor],
    spec: PermutationSpec | Mapping[str, list] | None = None,
    *,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
) -> Alignment:
    """Permute ``model``'s hidden units so its weights best match ``reference``'s.

    The model itself is left as it is; its aligned weights are in the result's
    ``state_dict`` and compute the same function.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> teacher = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> student = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> result = align_to(student, teacher)
        >>> result.distance_after < result.distance_before
        True
        >>> x = torch.randn(4, 3)
        >>> before = student(x)
        >>> student.load_state_dict(result.state_dict)
        <All keys matched successfully>
        >>> torch.allclose(student(x), before, atol=1e-6)
        True

    Args:
        model: The model to align (a student).
        reference: The model to align to (its teacher), or its ``state_dict``.
        spec: The permutation groups: a :class:`PermutationSpec`, plain data for
            :meth:`PermutationSpec.from_groups`, or None to derive them from the model's
            graph (:func:`~landscape.pairs.graph_spec.permutation_spec`).
        seed: Seeds the order in which groups are visited.
        max_sweeps: Passes over all groups at most.

    Raises:
        LandscapeInputError: The reference has other tensors or shapes than the model.
        UnpermutableModelError: The spec does not fit, or cannot be derived (it names the
            module).
    """
    from landscape.pairs.graph_spec import permutation_spec

    if seed < 0 or max_sweeps < 1:
        raise LandscapeInputError(
            f"seed {seed}, max_sweeps {max_sweeps}: give a seed >= 0 and max_sweeps >= 1"
        )
    state = {name: t.detach() for name, t in model.state_dict().items()}
    target = reference.state_dict() if isinstance(reference, nn.Module) else dict(reference)
    _check_same_shapes(state, target)
    if spec is None:
        spec = permutation_spec(model)
    elif not isinstance(spec, PermutationSpec):
        spec = PermutationSpec.from_groups(spec, state)
    spec.check(state)
    names = [name for name, _ in model.named_parameters()]
    matcher = _WeightMatching(spec, {n: target[n].detach() for n in names},
                              {n: state[n] for n in names})  # fmt: skip
    perms, sweeps = matcher.run(np.random.default_rng(seed), max_sweeps)
    aligned = apply_permutations(state, spec, perms)
    return Alignment(
        state_dict={name: t.clone() for name, t in aligned.items()},
        permutations=perms,
        spec=spec,
        distance_before=parameter_distance(target, state, names),
        distance_after=parameter_distance(target, aligned, names),
        sweeps=sweeps,
    )


def parameter_distance(
    first: Mapping[str, Tensor], second: Mapping[str, Tensor], names: list[str]
) -> float:
    r""":math:`\lVert \theta_1 - \theta_2 \rVert_2` over the tensors ``names``, in float64."""
    total = sum(
        float(((first[n].detach().double() - second[n].detach().double()) ** 2).sum())
        for n in names
    )
    return float(np.sqrt(total))


def _check_same_shapes(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> None:
    if set(state) != set(target):
        extra = sorted(set(state) ^ set(target))[:3]
        raise LandscapeInputError(
            f"the reference model has other tensors than the model ({', '.join(extra)} ...); "
            "align models of one architecture"
        )
    for name, tensor in state.items():
        if tensor.shape != target[name].shape:
            raise LandscapeInputError(
                f"{name} has shape {tuple(tensor.shape)} in the model and "
                f"{tuple(target[name].shape)} in the reference; align models of one "
                "architecture and width"
            )


class _WeightMatching:
    """Coordinate descent over the groups' permutations (parameters only, float64)."""

    def __init__(
        self, spec: PermutationSpec, target: dict[str, Tensor], source: dict[str, Tensor]
    ) -> None:
        self.spec = spec
        self.target = {n: t.detach().double().cpu() for n, t in target.items()}
        self.source = {n: t.detach().double().cpu() for n, t in source.items()}
        self.acting = {n: a for n, a in spec.by_tensor().items() if n in self.source}
        self.perms = {group: torch.arange(size) for group, size in spec.sizes.items()}

    def run(self, rng: np.random.Generator, max_sweeps: int) -> tuple[dict[str, Tensor], int]:
        """The permutations once no group improves (or after ``max_sweeps``), and the sweeps."""
        groups = [g for g in self.spec.sizes if any(a.name in self.source
                                                   for a in self.spec.axes[g])]  # fmt: skip
        for sweep in range(1, max_sweeps + 1):
            improved = False
            for index in rng.permutation(len(groups)):
                improved |= self._step(groups[index])
            if not improved:
                return self.perms, sweep
        return self.perms, max_sweeps

    def _step(self, group: str) -> bool:
        """Replace ``group``'s permutation by the best linear assignment if it gains."""
        size = self.spec.sizes[group]
        gain = torch.zeros(size, size, dtype=torch.float64)
        for unit_axis in self.spec.axes[group]:
            if unit_axis.name in self.source:
                mine = self._permuted(unit_axis.name, skip=(group, unit_axis))
                gain += (
                    _units(self.target[unit_axis.name], unit_axis, size)
                    @ _units(mine, unit_axis, size).T
                )
        rows, columns = linear_sum_assignment(gain.numpy(), maximize=True)
        candidate = torch.as_tensor(columns[np.argsort(rows)], dtype=torch.long)
        if torch.equal(candidate, self.perms[group]):
            return False
        touched = {a.name for a in self.spec.axes[group] if a.name in self.source}
        before = self._objective(touched)
        kept = self.perms[group]
        self.perms[group] = candidate
        after = self._objective(touched)
        if after > before + 1e-12 * max(1.0, abs(before)):
            return True
        self.perms[group] = kept
        return False

    def _permuted(self, name: str, skip: tuple[str, UnitAxis] | None = None) -> Tensor:
        tensor = self.source[name]
        for group, unit_axis in self.acting[name]:
            if (group, unit_axis) != skip:
                tensor = permute_axis(tensor, unit_axis, self.perms[group])
        return tensor

    def _objective(self, names: set[str]) -> float:
        return sum(float((self.target[n] * self._permuted(n)).sum()) for n in sorted(names))


def _units(tensor: Tensor, unit_axis: UnitAxis, size: int) -> Tensor:
    """``(size, rest)``: row ``i`` holds every value of unit ``i`` along ``unit_axis``."""
    positions = unit_axis.positions(size).reshape(-1)
    taken = tensor.index_select(unit_axis.axis, positions).movedim(unit_axis.axis, 0)
    return taken.reshape(size, -1)
