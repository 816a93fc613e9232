"""Grid axes for loss surfaces: ``MIN:MAX:N`` strings, both endpoints included.

Counts are parsed and checked before any coordinate is allocated: :func:`parse_axis_spec`
reads the text alone, :func:`check_grid_size` caps the product of the counts, and only
then :meth:`Axis.coordinates` builds the array.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeInputError

MAX_POINTS = 1_000_000
"""Grids above this many points are refused unless forced (51 x 51 is 2,601 points)."""
FORCED_MAX_POINTS = 100_000_000
"""Grids above this many points are refused even when forced: their arrays alone would
take gigabytes, and their forward passes years."""

_COUNT = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Axis:
    """A parsed ``MIN:MAX:N`` axis; nothing is allocated until :meth:`coordinates`."""

    low: float
    high: float
    count: int
    text: str = ""
    name: str = "--x"

    def __len__(self) -> int:
        return self.count

    def coordinates(self) -> np.ndarray:
        """``numpy.linspace(MIN, MAX, N)``; refused if float64 cannot hold N distinct points."""
        with np.errstate(all="ignore"):  # an overflowing step is refused below, not warned
            values = np.linspace(self.low, self.high, self.count)
        if not (np.all(np.isfinite(values)) and np.all(np.diff(values) > 0)):
            raise LandscapeInputError(
                f"{self.name} {self.text!r}: float64 cannot hold {self.count:,} distinct, "
                "finite points in this range; use a wider range or fewer points"
            )
        return values


def parse_count(text: str, name: str, hint: str) -> int:
    """A whole number of points written in ASCII digits (``51``, not ``5e1`` or ``51.0``)."""
    digits = text.strip()
    if not _COUNT.fullmatch(digits):
        raise LandscapeInputError(f"{hint} (N = {digits!r} is not a whole number of points)")
    return int(digits)


def parse_axis_spec(text: str, name: str = "--x") -> Axis:
    """Parse and check ``MIN:MAX:N`` without allocating anything.

    Raises:
        LandscapeInputError: Not three fields, MIN or MAX not a finite number, N not a
            whole number >= 1, or MIN not below MAX (equal for a single point).
    """
    hint = f"{name} {text!r}: expected MIN:MAX:N with MIN < MAX and N >= 1, e.g. -1:1:51"
    parts = text.split(":")
    if len(parts) != 3:
        raise LandscapeInputError(hint)
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise LandscapeInputError(f"{hint} (MIN and MAX must be numbers)") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise LandscapeInputError(f"{hint} (MIN and MAX must be finite)")
    count = parse_count(parts[2], name, hint)
    if count < 1:
        raise LandscapeInputError(f"{hint} (N = {count} points)")
    if count == 1 and low != high:
        raise LandscapeInputError(f"{name} {text!r}: a single point needs MIN == MAX, e.g. 0:0:1")
    if count > 1 and not low < high:
        raise LandscapeInputError(f"{hint} (MIN {low:g} is not below MAX {high:g})")
    return Axis(low, high, count, text, name)


def parse_axis(text: str, name: str = "--x", force: bool = False) -> np.ndarray:
    """Parse ``MIN:MAX:N`` into ``N`` evenly spaced coordinates, both endpoints included.

    ``N == 1`` is a single point and needs ``MIN == MAX`` (e.g. ``0:0:1``). ``N`` is
    checked against :data:`MAX_POINTS` (``force``: :data:`FORCED_MAX_POINTS`) before
    the array is allocated.

    Args:
        text: The axis specification, e.g. ``"-1:1:51"``.
        name: The option it came from, for the error message.
        force: Allow up to :data:`FORCED_MAX_POINTS` points.

    Returns:
        ``numpy.linspace(MIN, MAX, N)`` as float64.

    Raises:
        LandscapeInputError: On anything else, with one line that names the fix.

    Example:
        >>> parse_axis("-1:1:5").tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    axis = parse_axis_spec(text, name)
    check_grid_size(axis.count, None, force)
    return axis.coordinates()


def check_grid_size(nx: int, ny: int | None, force: bool = False) -> int:
    """Return the number of grid points, refusing more than :data:`MAX_POINTS` unless forced.

    Even forced, grids above :data:`FORCED_MAX_POINTS` are refused.
    """
    total = nx * (ny or 1)
    if total > FORCED_MAX_POINTS:
        raise LandscapeInputError(
            f"the grid has {total:,} points (more than {FORCED_MAX_POINTS:,}, refused even "
            "with --force); use fewer points per axis"
        )
    if total > MAX_POINTS and not force:
        raise LandscapeInputError(
            f"the grid has {total:,} points (more than {MAX_POINTS:,}); "
            "use fewer points per axis or pass --force"
        )
    return total


def parse_grid(
    x_text: str, y_text: str | None, force: bool = False, names: tuple[str, str] = ("--x", "--y")
) -> tuple[Axis, Axis | None, int]:
    """Parse both axes and check the grid's size, allocating nothing (``y_text`` None: 1D)."""
    x = parse_axis_spec(x_text, names[0])
    y = None if y_text is None else parse_axis_spec(y_text, names[1])
    return x, y, check_grid_size(x.count, None if y is None else y.count, force)
