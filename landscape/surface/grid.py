"""Grid axes for loss surfaces: ``MIN:MAX:N`` strings, both endpoints included."""

from __future__ import annotations

import math

import numpy as np

from landscape.errors import LandscapeInputError

MAX_POINTS = 1_000_000
"""Grids above this many points are refused unless forced (51 x 51 is 2,601 points)."""


def parse_axis(text: str, name: str = "--x") -> np.ndarray:
    """Parse ``MIN:MAX:N`` into ``N`` evenly spaced coordinates, both endpoints included.

    ``N == 1`` is a single point and needs ``MIN == MAX`` (e.g. ``0:0:1``).

    Args:
        text: The axis specification, e.g. ``"-1:1:51"``.
        name: The option it came from, for the error message.

    Returns:
        ``numpy.linspace(MIN, MAX, N)`` as float64.

    Raises:
        LandscapeInputError: On anything else, with one line that names the fix.

    Example:
        >>> parse_axis("-1:1:5").tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    hint = f"{name} {text!r}: expected MIN:MAX:N with MIN < MAX and N >= 1, e.g. -1:1:51"
    parts = text.split(":")
    if len(parts) != 3:
        raise LandscapeInputError(hint)
    try:
        low, high = float(parts[0]), float(parts[1])
        count = int(parts[2])
    except ValueError:
        raise LandscapeInputError(hint) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise LandscapeInputError(f"{hint} (MIN and MAX must be finite)")
    if count < 1:
        raise LandscapeInputError(f"{hint} (N = {count} points)")
    if count == 1 and low != high:
        raise LandscapeInputError(f"{name} {text!r}: a single point needs MIN == MAX, e.g. 0:0:1")
    if count > 1 and not low < high:
        raise LandscapeInputError(f"{hint} (MIN {low:g} is not below MAX {high:g})")
    return np.linspace(low, high, count)


def check_grid_size(nx: int, ny: int | None, force: bool = False) -> int:
    """Return the number of grid points, refusing more than :data:`MAX_POINTS` unless forced."""
    total = nx * (ny or 1)
    if total > MAX_POINTS and not force:
        raise LandscapeInputError(
            f"the grid has {total:,} points (more than {MAX_POINTS:,}); "
            "use fewer points per axis or pass --force"
        )
    return total
