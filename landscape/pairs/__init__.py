"""A teacher and its student as a pair: alignment, paths and barriers, curves, agreement.

Alignment
    align_to, Alignment, PermutationSpec, UnitAxis, permutation_spec, apply_permutations,
    random_permutations, parameter_distance, UnpermutableModelError
Barriers
    linear_path, PathValues, line_excess, path_values
Curves
    bezier_curve, CurveSettings, CurveResult, bezier_point, bezier_coordinates
Agreement
    function_agreement, Agreement, layer_cka, linear_cka
"""

from landscape.pairs.agreement import Agreement, function_agreement, layer_cka, linear_cka
from landscape.pairs.align import Alignment, align_to, parameter_distance
from landscape.pairs.bezier import (
    CurveResult,
    CurveSettings,
    bezier_coordinates,
    bezier_curve,
    bezier_point,
)
from landscape.pairs.graph_spec import permutation_spec
from landscape.pairs.path import PathValues, line_excess, linear_path, path_values
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
    # Barriers
    "linear_path",
    "PathValues",
    "line_excess",
    "path_values",
    # Curves
    "bezier_curve",
    "CurveSettings",
    "CurveResult",
    "bezier_point",
    "bezier_coordinates",
    # Agreement
    "function_agreement",
    "Agreement",
    "layer_cka",
    "linear_cka",
]
