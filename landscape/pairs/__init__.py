"""Teacher and student as a pair: paths and barriers between them, curves, agreement.

Barriers
    linear_path, PathValues, line_excess, path_values
Curves
    bezier_curve, CurveSettings, CurveResult, bezier_point, bezier_coordinates
Agreement
    function_agreement, Agreement, layer_cka, linear_cka
"""

from landscape.pairs.agreement import Agreement, function_agreement, layer_cka, linear_cka
from landscape.pairs.bezier import (
    CurveResult,
    CurveSettings,
    bezier_coordinates,
    bezier_curve,
    bezier_point,
)
from landscape.pairs.path import PathValues, line_excess, linear_path, path_values

__all__ = [
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
