"""A teacher and its student as a pair: permutation alignment (weight matching).

Alignment
    align_to, Alignment, PermutationSpec, UnitAxis, permutation_spec, apply_permutations,
    random_permutations, UnpermutableModelError
"""

from landscape.pairs.align import Alignment, align_to, parameter_distance
from landscape.pairs.graph_spec import permutation_spec
from landscape.pairs.permutation import (
    PermutationSpec,
    UnitAxis,
    UnpermutableModelError,
    apply_permutations,
    random_permutations,
)

__all__ = [
    # Alignment
    "Alignment",
    "PermutationSpec",
    "UnitAxis",
    "UnpermutableModelError",
    "align_to",
    "apply_permutations",
    "parameter_distance",
    "permutation_spec",
    "random_permutations",
]
