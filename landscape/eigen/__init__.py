"""Top (or bottom) eigenpairs of a curvature operator: Lanczos and deflated power iteration."""

from landscape.eigen.lanczos import lanczos
from landscape.eigen.power import power_iteration
from landscape.eigen.result import EigenResult

__all__ = ["EigenResult", "lanczos", "power_iteration"]
