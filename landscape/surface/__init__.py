"""Loss surfaces: directions, grids, batched evaluation, HDF5 storage, plots and exports.

:mod:`landscape.surface.plot` (matplotlib) is imported only when used.
"""

from landscape.surface.directions import (
    filter_normalize,
    hessian_directions,
    interpolation_direction,
    random_direction,
)
from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points
from landscape.surface.export import export_surface
from landscape.surface.grid import parse_axis
from landscape.surface.store import SurfaceSpec, SurfaceStore

__all__ = [
    "SurfaceEvaluator",
    "SurfaceSpec",
    "SurfaceStore",
    "compute_surface",
    "export_surface",
    "filter_normalize",
    "grid_points",
    "hessian_directions",
    "interpolation_direction",
    "parse_axis",
    "random_direction",
]
