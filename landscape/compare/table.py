"""Comparing models measured on the same data: tables, changes, summaries, per-seed wins.

A *record* is a flat dict describing one model: identification (``name``, ``role``,
``generation``, ``seed``) and measured numbers (``test_accuracy``, ``train_loss``,
``lambda_1``, ``trace``, ...). Everything here is a pure function of records, so the
JSON, Markdown and CSV renderings of one comparison come from one computation.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from statistics import mean, stdev
from typing import Any

Record = dict[str, Any]


def relative_change(value: float | None, reference: float | None) -> float | None:
    """``(value - reference) / |reference|``, or None when undefined."""
    if value is None or reference is None or reference == 0 or not math.isfinite(reference):
        return None
    return (value - reference) / abs(reference)


def with_changes(
    records: Sequence[Record], columns: Sequence[str], reference: int = 0
) -> list[Record]:
    """Records with ``<column>_change`` added: relative change against `records[reference]`."""
    base = records[reference]
    return [
        {**r, **{f"{c}_change": relative_change(r.get(c), base.get(c)) for c in columns}}
        for r in records
    ]


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if column.endswith("_change"):
            return f"{value:+.1%}"
        if "accuracy" in column:
            return f"{value:.4f}"
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: Sequence[Record], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` (missing values as an em dash)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Record], columns: Sequence[str]) -> str:
    """CSV of `columns` with full-precision numbers (``repr``), empty where missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return buffer.getvalue()


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation, min, max and count of finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": mean(finite),
        "std": stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def by_generation(records: Sequence[Record], columns: Sequence[str]) -> list[Record]:
    """Per generation, the summary of each column across seeds."""
    generations = sorted({r["generation"] for r in records})
    table = []
    for g in generations:
        group = [r for r in records if r["generation"] == g]
        table.append(
            {"generation": g, **{c: summarize([r.get(c) for r in group]) for c in columns}}
        )
    return table


def seed_pairs(records: Sequence[Record], generation: int) -> list[tuple[Record, Record]]:
    """(teacher, student of `generation`) pairs that share a seed."""
    teachers = {r["seed"]: r for r in records if r["generation"] == 0}
    return [
        (teachers[r["seed"]], r)
        for r in records
        if r["generation"] == generation and r["seed"] in teachers
    ]


def count_wins(
    records: Sequence[Record], generation: int, column: str, lower_is_better: bool
) -> dict[str, int]:
    """In how many seeds the student of `generation` beats its teacher on `column`.

    Ties and missing values count as not beating. Returns ``{"wins", "seeds"}``.
    """
    pairs = seed_pairs(records, generation)
    wins = 0
    for teacher, student in pairs:
        t, s = teacher.get(column), student.get(column)
        if t is None or s is None:
            continue
        wins += (s < t) if lower_is_better else (s > t)
    return {"wins": wins, "seeds": len(pairs)}
