"""Sharpness as a loss increase within a radius, in plain and reparametrization-aware geometries.

Average-case (random perturbations) and worst-case (projected gradient ascent) sharpness
in the plain, element-wise adaptive (ASAM, Kwon et al. 2021) and filter-wise adaptive
(Andriushchenko et al. 2023) geometries. :func:`sharpness_report` runs them all.
"""

from landscape.sharpness.average import average_sharpness
from landscape.sharpness.geometry import GEOMETRIES, perturbation_scale, perturbation_scales
from landscape.sharpness.objective import PerturbedLoss
from landscape.sharpness.report import MEASURES, planned_evaluations, sharpness_report
from landscape.sharpness.result import SharpnessResult
from landscape.sharpness.worst import worst_sharpness

__all__ = [
    "GEOMETRIES",
    "MEASURES",
    "PerturbedLoss",
    "SharpnessResult",
    "average_sharpness",
    "perturbation_scale",
    "perturbation_scales",
    "planned_evaluations",
    "sharpness_report",
    "worst_sharpness",
]
