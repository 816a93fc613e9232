"""Top (or bottom) eigenpairs of a curvature operator: Lanczos and deflated power iteration."""

from landscape.curvature.eigen.lanczos import lanczos, lanczos_extremes
from landscape.curvature.eigen.power import power_iteration
from landscape.curvature.eigen.result import EigenResult

__all__ = ["EigenResult", "lanczos", "lanczos_extremes", "power_iteration"]
