"""Measurements on curvature operators: eigenvalues, trace, density, GGN split, temperature."""

from landscape.curvature.measure import (
    CurvatureRequest,
    CurvatureResult,
    measure_curvature,
)
from landscape.curvature.model import model_curvature, policy_operator
from landscape.curvature.report import curvature_report, format_summary

__all__ = [
    "CurvatureRequest",
    "CurvatureResult",
    "curvature_report",
    "format_summary",
    "measure_curvature",
    "model_curvature",
    "policy_operator",
]
