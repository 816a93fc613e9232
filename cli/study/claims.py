"""The claims of *Revisiting Self-Distillation* (docs/results.md), counted over seeds.

Study vocabulary, kept out of ``landscape``: which measure stands for which claim, and
Mobahi et al.'s rise-then-fall prediction over generations. The counting itself is
:func:`landscape.compare.table.count_wins`.
"""

from __future__ import annotations

from collections.abc import Sequence

from landscape.compare.table import Record, count_wins

CLAIMS = (
    ("test_accuracy", False, "student beats teacher (test accuracy)"),
    ("lambda_1", True, "student flatter: lower top Hessian eigenvalue"),
    ("trace", True, "student flatter: lower Hessian trace"),
    ("surface_width", False, "student flatter: wider 1D filter-normalized basin"),
    ("ggn_lambda_1", True, "student flatter: lower Gauss-Newton top eigenvalue"),
    ("avg_sharpness", True, "student flatter: lower average-case adaptive sharpness"),
    ("worst_sharpness", True, "student flatter: lower worst-case adaptive sharpness"),
    ("matched_lambda_1", True, "student flatter: lower λ1 at a matched train loss"),
)


def claims_table(records: Sequence[Record]) -> list[Record]:
    """The paper's claims 1 and 3, counted per student generation across seeds."""
    students = sorted({r["generation"] for r in records if r["generation"] > 0})
    rows = []
    for g in students:
        for column, lower, text in CLAIMS:
            counts = count_wins(records, g, column, lower)
            if counts["seeds"] == 0 or all(r.get(column) is None for r in records):
                continue
            holds = counts["wins"] == counts["seeds"]
            rows.append({
                "generation": g, "claim": text, "measure": column, **counts,
                "verdict": "holds" if holds else
                ("mixed" if counts["wins"] > 0 else "does not hold"),
            })  # fmt: skip
    return rows


def rise_then_fall(means: Sequence[float]) -> bool:
    """Whether a sequence peaks strictly inside (Mobahi et al.'s prediction over generations)."""
    if len(means) < 3:
        return False
    peak = max(range(len(means)), key=lambda i: means[i])
    return 0 < peak < len(means) - 1
