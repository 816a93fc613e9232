r"""Figures of tracked sharpness: :math:`\lambda_1` against steps, with the stability line.

A run's log is JSON lines (one record per line, as ``flatscape train`` writes beside a
checkpoint, or :class:`~landscape.tracking.tracker.SharpnessTracker`'s ``log``); the
records that hold ``lambda_1`` and ``step`` are drawn, other lines (epoch summaries) are
skipped. Where records hold ``stability_threshold`` (:math:`(2 + 2\beta)/\eta`) it is drawn
dashed in the run's colour: gradient descent at that rate cannot stay stable above it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from landscape.atomic_files import save_figure
from landscape.errors import LandscapeInputError
from landscape.surface.plot import COLORS, FORMATS, STYLE


def read_tracked(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log that hold ``step`` and ``lambda_1``, in file order.

    Raises:
        LandscapeInputError: A missing or unreadable file, a line that is not JSON, or no
            tracked record (the run was trained without ``--track-sharpness``).
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LandscapeInputError(f"{path}: cannot read the log ({err})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise LandscapeInputError(
                f"{path}: line {number} is not JSON; give a JSON-lines log (RUN.log.jsonl)"
            ) from None
        if isinstance(record, dict) and "lambda_1" in record and "step" in record:
            records.append(record)
    if not records:
        raise LandscapeInputError(
            f"{path}: no lambda_1 records; train with --track-sharpness N or "
            "--track-every-epoch (or log a SharpnessTracker's records)"
        )
    return records


def plot_sharpness(
    paths: Sequence[str | Path],
    out: str | Path,
    labels: Sequence[str] | None = None,
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    r"""Draw :math:`\lambda_1` against steps of several logs (teacher, students) in one figure.

    Args:
        paths: JSON-lines logs (:func:`read_tracked`).
        out: Figure file: ``.pdf``, ``.png`` or ``.svg``.
        labels: One legend label per log (default: the file names without ``.log.jsonl``).
        log: Logarithmic sharpness axis.
        vmin: Lower end of the sharpness axis.
        vmax: Upper end of the sharpness axis.

    Returns:
        The figure's path.
    """
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise LandscapeInputError(f"{out}: name the figure .pdf, .png or .svg")
    if labels and len(labels) != len(paths):
        raise LandscapeInputError(
            f"--label given {len(labels)} times for {len(paths)} files; give one per file"
        )
    runs = [read_tracked(path) for path in paths]
    names = list(labels) if labels else [Path(p).name.removesuffix(".log.jsonl") for p in paths]
    with matplotlib.rc_context(STYLE):
        figure = _figure(names, runs, log, vmin, vmax)
        save_figure(figure, out, format=FORMATS[out.suffix.lower()])
    return out


def _figure(
    names: Sequence[str],
    runs: Sequence[list[dict[str, Any]]],
    log: bool,
    vmin: float | None,
    vmax: float | None,
) -> Figure:
    """One axis: each run's lambda_1 (solid, dots) and its threshold (dashed), one colour."""
    figure = Figure(figsize=(4.6, 3.1))
    axes = figure.add_subplot()
    for index, (name, records) in enumerate(zip(names, runs, strict=True)):
        colour = COLORS[index % len(COLORS)]
        steps = [r["step"] for r in records]
        axes.plot(steps, [r["lambda_1"] for r in records], "o-", color=colour, markersize=3,
                  label=f"{name} $\\lambda_1$")  # fmt: skip
        limits = [(r["step"], r["stability_threshold"]) for r in records
                  if r.get("stability_threshold") is not None]  # fmt: skip
        heavy_ball = any(r.get("momentum") for r in records)
        line = "$(2+2\\beta)/\\eta$" if heavy_ball else "$2/\\eta$"
        if limits:
            axes.plot(*zip(*limits, strict=True), "--", color=colour, linewidth=1,
                      label=f"{name} {line}")  # fmt: skip
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("sharpness $\\lambda_1$")
    if log:
        axes.set_yscale("log")
    axes.set_ylim(bottom=vmin, top=vmax)
    axes.legend()
    return figure
