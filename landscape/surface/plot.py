"""Publication figures of stored loss surfaces: 1D curves, contours, heatmaps, 3D surfaces.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot state, no
display needed) in one style (:data:`STYLE`), and saved as PDF, PNG or SVG by the file's
suffix. Points that are not finite (diverged far from the minimum) or not computed yet
are gaps: broken curves, blank cells, missing contour segments and 3D facets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.atomic_files import save_figure
from landscape.errors import LandscapeInputError
from landscape.surface.store import SurfaceStore

KINDS = ("line", "contour", "filled", "heatmap", "surface3d")
FORMATS = {".pdf": "pdf", ".png": "png", ".svg": "svg"}
CMAP = "viridis"
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
"""Okabe-Ito colours: distinguishable with colour-vision deficiencies and in greyscale."""

STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "savefig.bbox": "tight",
    "savefig.dpi": 300,
    "pdf.fonttype": 42,  # embed TrueType fonts, as publishers ask
    "svg.fonttype": "none",
}
MARKED_POINTS = 60
"""Curves with at most this many points mark each point (isolated points stay visible)."""
MAX_LEVELS = 1000
"""Contour levels at most (far more than a figure can show)."""
PANEL = (3.3, 2.6)
"""Inches per panel: about one column of a two-column paper."""


@dataclass
class Surface:
    """A stored surface ready to draw: coordinates and value arrays with gaps as NaN."""

    label: str
    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    attrs: dict[str, Any]
    marks: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[dict[str, np.ndarray]] = field(default_factory=list)


def load_surface(path: str | Path, label: str | None = None) -> Surface:
    """Read a surface file; points not yet computed become NaN (gaps).

    Models marked on a plane (``marks/``) and projected trajectories (``paths/``) come
    along, and an eigenvalue map gets ``lambda_ratio`` = |lambda_min / lambda_max|.
    """
    with SurfaceStore.read(path) as store:
        values = {key: np.where(store.done, array, np.nan) for key, array in store.arrays.items()}
        if "lambda_max" in values and "lambda_min" in values:
            with np.errstate(divide="ignore", invalid="ignore"):
                values["lambda_ratio"] = np.abs(values["lambda_min"] / values["lambda_max"])
        found = store.extra("paths")
        paths = [
            {key.split("/", 1)[1]: value for key, value in found.items() if key.startswith(f"{n}/")}
            for n in sorted({int(key.split("/")[0]) for key in found})
        ]
        return Surface(label or Path(path).stem, store.x, store.y, values, store.attrs,
                       store.extra("marks"), paths)  # fmt: skip


def plot_surfaces(
    paths: Sequence[str | Path],
    out: str | Path,
    kind: str | None = None,
    key: str = "train_loss",
    labels: Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    levels: int | Sequence[float] | None = None,
    log: bool = False,
) -> Path:
    """Draw one or more surface files into one figure.

    Args:
        paths: Surface files; ``line`` overlays 1D curves, the 2D kinds draw one panel per
            file side by side on a shared colour scale.
        out: Figure file; ``.pdf``, ``.png`` or ``.svg``.
        kind: ``line``, ``contour`` (labelled levels), ``filled``, ``heatmap`` or
            ``surface3d``; default ``line`` for 1D files, ``contour`` for 2D ones.
        key: The 2D quantity: ``train_loss``, ``train_acc``, ``test_loss`` or ``test_acc``.
        labels: One legend/panel label per file (default: the file names).
        vmin: Lower end of the colour and level range (2D) or of the loss axis
            (``line``); default: the smallest finite value.
        vmax: Upper end; default: the largest finite value (larger values are clipped).
        levels: Number of contour levels, or the levels themselves (default 15); a
            line plot has none, and refuses them.
        log: Logarithmic loss scale (non-positive values become gaps).

    Returns:
        The figure's path.
    """
    out = Path(out)
    if kind is not None and kind not in KINDS:
        raise LandscapeInputError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    if out.suffix.lower() not in FORMATS:
        raise LandscapeInputError(f"{out}: name the figure .pdf, .png or .svg")
    if not paths:
        raise LandscapeInputError("plot: give at least one surface file")
    if labels and len(labels) != len(paths):
        raise LandscapeInputError(
            f"--label given {len(labels)} times for {len(paths)} files; give one per file"
        )
    surfaces = [load_surface(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    if kind is None:
        kind = "line" if surfaces[0].y is None else "contour"
    for path, surface in zip(paths, surfaces, strict=True):
        if (kind == "line") != (surface.y is None):
            hint = "line" if surface.y is None else "contour, filled, heatmap or surface3d"
            raise LandscapeInputError(
                f"{path} is a {'1D' if surface.y is None else '2D'} surface; use --kind {hint}"
            )
    if kind == "line" and levels is not None:
        raise LandscapeInputError("--levels draws contours, and a line plot has none; drop it")
    with matplotlib.rc_context(STYLE):
        if kind == "line":
            fig = line_figure(surfaces, vmin, vmax, log)
        else:
            fig = grid_figure(surfaces, kind, key, vmin, vmax, 15 if levels is None else levels,
                              log)  # fmt: skip
        fmt = FORMATS[out.suffix.lower()]
        save_figure(fig, out, format=fmt, metadata=_reproducible_metadata(fmt))
    return out


def line_figure(
    surfaces: Sequence[Surface], vmin: float | None, vmax: float | None, log: bool
) -> Figure:
    """Loss (left) and accuracy (right) along x; one colour per file, test dashed.

    Eigenvalue maps draw lambda_max (left) and lambda_min (right) instead.
    """
    fig = Figure(figsize=(2 * PANEL[0], PANEL[1]), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    if all("lambda_max" in s.values for s in surfaces):
        return _eigen_lines(fig, loss_ax, acc_ax, surfaces)
    if any("lambda_max" in s.values for s in surfaces):
        raise LandscapeInputError("plot: draw eigenvalue maps and loss curves in separate figures")
    present = {key.split("_")[0] for s in surfaces for key in s.values}
    splits = [split for split in ("train", "test") if split in present]
    for n, surface in enumerate(surfaces):
        color = COLORS[n % len(COLORS)]
        for split in splits:
            if f"{split}_loss" not in surface.values:
                continue
            style = "-" if split == "train" else "--"
            marker = {"marker": "o", "markersize": 2} if len(surface.x) <= MARKED_POINTS else {}
            name = surface.label if len(splits) == 1 else f"{surface.label} ({split})"
            loss = _gaps(surface.values[f"{split}_loss"], log)
            loss_ax.plot(surface.x, loss, style, color=color, label=name, **marker)
            acc = _gaps(surface.values[f"{split}_acc"], False)
            acc_ax.plot(surface.x, acc, style, color=color, **marker)
    if log:
        loss_ax.set_yscale("log")
    if vmin is not None or vmax is not None:
        loss_ax.set_ylim(vmin, vmax)
    loss_ax.set(xlabel=_axis_label(surfaces[0], "x"), ylabel="loss")
    acc_ax.set(xlabel=_axis_label(surfaces[0], "x"), ylabel="accuracy (%)")
    loss_ax.legend()
    return fig


def _eigen_lines(fig: Figure, top: Axes, bottom: Axes, surfaces: Sequence[Surface]) -> Figure:
    for n, surface in enumerate(surfaces):
        marker = {"marker": "o", "markersize": 2} if len(surface.x) <= MARKED_POINTS else {}
        color = COLORS[n % len(COLORS)]
        top.plot(surface.x, _gaps(surface.values["lambda_max"], False), color=color,
                 label=surface.label, **marker)  # fmt: skip
        bottom.plot(surface.x, _gaps(surface.values["lambda_min"], False), color=color, **marker)
    top.set(xlabel=_axis_label(surfaces[0], "x"), ylabel="lambda_max")
    bottom.set(xlabel=_axis_label(surfaces[0], "x"), ylabel="lambda_min")
    top.legend()
    return fig


def grid_figure(
    surfaces: Sequence[Surface],
    kind: str,
    key: str,
    vmin: float | None,
    vmax: float | None,
    levels: int | Sequence[float],
    log: bool,
) -> Figure:
    """One panel per surface, a shared colour scale and one colour bar."""
    arrays = []
    for surface in surfaces:
        if key not in surface.values:
            raise LandscapeInputError(
                f"{surface.label}: no {key} in this file (it has {', '.join(surface.values)}); "
                "choose another --key"
            )
        if log:
            _check_positive(surface.values[key], key, surface.label)
        arrays.append(_gaps(surface.values[key], log))
    norm, level_values = _scale(arrays, key, vmin, vmax, levels, log)
    projection = "3d" if kind == "surface3d" else None
    fig = Figure(figsize=(PANEL[0] * len(surfaces) + 0.6, PANEL[1]), layout="constrained")
    axes = [
        fig.add_subplot(1, len(surfaces), n + 1, projection=projection)
        for n in range(len(surfaces))
    ]
    mappable = None
    for ax, surface, z in zip(axes, surfaces, arrays, strict=True):
        mappable = _draw(ax, kind, surface.x, surface.y, z, norm, level_values) or mappable
        if kind != "surface3d":
            _draw_marks(ax, surface)
        elif key in surface.marks:  # models at their own value, above the surface
            (x, y), z = surface.marks["coordinates"].T, surface.marks[key]
            ax.computed_zorder = False  # the stars in front of the surface they sit on
            ax.scatter(x, y, np.minimum(z, norm.vmax), marker="*", s=40, color="white",
                       edgecolors="black", linewidths=0.5, depthshade=False, zorder=10)  # fmt: skip
            for n, label in enumerate(surface.marks["labels"]):
                ax.text(x[n], y[n], min(z[n], norm.vmax), f" {label}", fontsize=6, zorder=11)
        ax.set_xlabel(_axis_label(surface, "x"))
        ax.set_ylabel(_axis_label(surface, "y"))
        if kind != "surface3d":
            ax.set_aspect("equal" if _same_span(surface) else "auto")
        if len(surfaces) > 1:
            ax.set_title(surface.label)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes, label=key.replace("_", " "), shrink=0.9)
        if log:  # round labels at the levels, not 1.11265 x 10^1
            bar.ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
            bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    return fig


def _draw(
    ax: Axes,
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    norm: colors.Normalize,
    level_values: np.ndarray,
) -> Any:
    """Draw one panel; returns what the colour bar should describe."""
    X, Y = np.meshgrid(x, y)
    masked = np.ma.masked_invalid(z)
    if kind == "contour":
        lines = ax.contour(X, Y, masked, levels=level_values, cmap=CMAP, norm=norm)
        ax.clabel(lines, inline=True, fontsize=6, fmt="%.3g")
        return lines
    if kind == "filled":
        return ax.contourf(X, Y, masked, levels=level_values, cmap=CMAP, norm=norm, extend="both")
    if kind == "heatmap":
        return ax.pcolormesh(_edges(x), _edges(y), masked, cmap=CMAP, norm=norm, shading="flat")
    return _surface3d(ax, X, Y, z, norm)


def _draw_marks(ax: Axes, surface: Surface) -> None:
    """The projected trajectories (lines, a dot per snapshot) and the marked models."""
    for n, path in enumerate(surface.paths):
        xy = path["coordinates"]
        label = str(path["label"][0]) if "label" in path else f"path {n + 1}"
        ax.plot(xy[:, 0], xy[:, 1], "-", color=COLORS[n % len(COLORS)], lw=0.9,
                marker="o", markersize=1.8, label=f"{label} trajectory")  # fmt: skip
        ax.plot(*xy[0], "s", color=COLORS[n % len(COLORS)], markersize=3)  # start
    marks = surface.marks
    if "coordinates" not in marks:
        return
    for n, (x, y) in enumerate(marks["coordinates"]):
        ax.plot(x, y, marker="*", color="white", markeredgecolor="black",
                markeredgewidth=0.5, markersize=8, linestyle="none")  # fmt: skip
        ax.annotate(str(marks["labels"][n]), (x, y), xytext=(4, 4), textcoords="offset points",
                    fontsize=7, path_effects=_halo())  # fmt: skip
    if surface.paths:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, fontsize=6)


def _halo() -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="white")]


def _surface3d(
    ax: Axes, X: np.ndarray, Y: np.ndarray, z: np.ndarray, norm: colors.Normalize
) -> matplotlib.cm.ScalarMappable:
    """3D surface clipped at the colour range; facets touching a gap are left out."""
    clipped = np.where(np.isfinite(z), np.minimum(z, norm.vmax), np.nan)
    valid = np.isfinite(clipped)
    cells = valid[:-1, :-1] & valid[1:, :-1] & valid[:-1, 1:] & valid[1:, 1:]
    filled = np.nan_to_num(clipped)
    mean = (filled[:-1, :-1] + filled[1:, :-1] + filled[:-1, 1:] + filled[1:, 1:]) / 4
    cmap = matplotlib.colormaps[CMAP]
    face = np.zeros(clipped.shape + (4,))
    face[:-1, :-1] = cmap(norm(np.where(cells, mean, norm.vmin)))
    face[:-1, :-1][~cells] = 0.0  # transparent
    if clipped.shape[0] > 1 and clipped.shape[1] > 1:
        ax.plot_surface(
            X, Y, clipped, facecolors=face, rstride=1, cstride=1, linewidth=0, shade=False
        )
    ax.set_zlim(norm.vmin, norm.vmax)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    mappable.set_array([])
    return mappable


def _scale(
    arrays: Sequence[np.ndarray],
    key: str,
    vmin: float | None,
    vmax: float | None,
    levels: int | Sequence[float],
    log: bool,
) -> tuple[colors.Normalize, np.ndarray]:
    """Shared colour norm and contour levels over all panels' finite values."""
    for flag, value in (("--vmin", vmin), ("--vmax", vmax)):
        if value is not None and not np.isfinite(value):
            raise LandscapeInputError(f"{flag} {value}: give a finite number")
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    if finite.size == 0:
        raise LandscapeInputError(f"{key}: no finite values to plot (every point diverged?)")
    low = float(finite.min()) if vmin is None else vmin
    high = float(finite.max()) if vmax is None else vmax
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise LandscapeInputError(f"--vmin {vmin:g} --vmax {vmax:g}: vmin must be below vmax")
    if log and low <= 0:
        raise LandscapeInputError(f"--vmin {low:g}: a log scale needs a positive minimum")
    if not low < high:
        high = low + (abs(low) if low else 1.0)  # a flat surface still gets a colour scale
    if isinstance(levels, int):
        if not 2 <= levels <= MAX_LEVELS:
            raise LandscapeInputError(f"--levels {levels}: give 2 to {MAX_LEVELS} levels")
        if log:
            level_values = np.geomspace(low, high, levels)
        else:  # round numbers, at most `levels` of them, inside the range
            level_values = ticker.MaxNLocator(levels).tick_values(low, high)
            level_values = level_values[(level_values >= low) & (level_values <= high)]
    else:
        level_values = _given_levels(levels)
    norm = colors.LogNorm(low, high) if log else colors.Normalize(low, high)
    return norm, level_values


def _given_levels(levels: Sequence[float]) -> np.ndarray:
    """Levels given as values: at least two, distinct and finite; sorted."""
    values = np.asarray(sorted(levels), dtype=np.float64)
    text = ",".join(f"{v:g}" for v in levels)
    if values.size < 2 or not np.all(np.isfinite(values)) or np.any(np.diff(values) == 0):
        raise LandscapeInputError(
            f"--levels {text}: give at least 2 distinct finite values, e.g. 0.1,0.5,1,2"
        )
    if values.size > MAX_LEVELS:
        raise LandscapeInputError(f"--levels: {values.size} values; give at most {MAX_LEVELS}")
    return values


def _check_positive(values: np.ndarray, key: str, label: str) -> None:
    """Refuse a log scale of values that have no positive point (e.g. lambda_min < 0)."""
    finite = values[np.isfinite(values)]
    if finite.size and not np.any(finite > 0):
        raise LandscapeInputError(
            f"--log needs positive values, and {key} of {label} has none (its finite values "
            f"lie in [{finite.min():.4g}, {finite.max():.4g}]); drop --log or choose another --key"
        )


def _gaps(values: np.ndarray, log: bool) -> np.ndarray:
    """NaN wherever a value cannot be drawn: not finite, or not positive on a log scale."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | ((values <= 0) if log else False)
    return np.where(bad, np.nan, values)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around grid coordinates (midpoints; half a step beyond the ends)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[:-1] + centres[1:]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _same_span(surface: Surface) -> bool:
    assert surface.y is not None
    span_x = surface.x[-1] - surface.x[0]
    span_y = surface.y[-1] - surface.y[0]
    return span_x > 0 and span_y > 0 and 0.5 <= span_x / span_y <= 2


def _axis_label(surface: Surface, axis: str) -> str:
    kind = surface.attrs.get(f"{axis}_direction", surface.attrs.get("direction", ""))
    return f"{axis} ({kind})" if kind else axis


def _reproducible_metadata(fmt: str) -> dict[str, Any]:
    """Leave creation dates out, so the same data gives the same file."""
    if fmt == "pdf":
        return {"CreationDate": None, "ModDate": None}
    if fmt == "svg":
        return {"Date": None}
    return {}
