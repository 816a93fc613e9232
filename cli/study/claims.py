"""The claims of *Revisiting Self-Distillation* (docs/results.md), tested over seeds.

Study vocabulary, kept out of ``landscape``: which measure stands for which claim, and
Mobahi et al.'s rise-then-fall prediction over generations. The counting is
:func:`landscape.compare.table.count_wins`, the test
:func:`landscape.compare.paired_test.paired_test` (student vs its teacher, per seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from landscape.compare.paired_test import PairedTest, paired_test
from landscape.compare.table import Record, count_wins, seed_pairs

SIGNIFICANCE = 0.05
"""Two-sided level of the paired t-test behind a claim's verdict."""

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
    """The paper's claims 1 and 3 per student generation: counted and tested across seeds.

    Each row: ``generation``, ``claim``, ``measure``, ``wins`` and ``seeds`` (the count),
    the fields of :class:`~landscape.compare.paired_test.PairedTest` for student minus
    teacher (``n``, ``mean_difference``, ``effect_size``, ``t_p_value``,
    ``wilcoxon_p_value``, ...) and ``verdict`` (:func:`verdict`).
    """
    students = sorted({r["generation"] for r in records if r["generation"] > 0})
    rows = []
    for g in students:
        pairs = seed_pairs(records, g)
        for column, lower, text in CLAIMS:
            counts = count_wins(records, g, column, lower)
            if counts["seeds"] == 0 or all(r.get(column) is None for r in records):
                continue
            test = paired_test([s.get(column) for _, s in pairs],
                               [t.get(column) for t, _ in pairs])  # fmt: skip
            rows.append({"generation": g, "claim": text, "measure": column, **counts,
                         **asdict(test), "verdict": verdict(test, lower)})  # fmt: skip
    return rows


def verdict(test: PairedTest, lower_is_better: bool) -> str:
    """A claim's verdict from its paired t-test at :data:`SIGNIFICANCE`.

    ``holds`` or ``reversed`` (p below the level; the mean difference's sign says which),
    ``not significant``, or ``untested`` (no t-test: too few seeds, or equal differences).
    """
    if test.t_p_value is None:
        return "untested"
    if test.t_p_value >= SIGNIFICANCE:
        return "not significant"
    better = test.mean_difference < 0 if lower_is_better else test.mean_difference > 0
    return "holds" if better else "reversed"


def claim_cell(claim: Record) -> str:
    """A claim's count and test in one cell: ``2/3, d_z +1.2, p 0.21``."""
    text = f"{claim['wins']}/{claim['seeds']}"
    if claim["effect_size"] is not None:
        text += f", d_z {claim['effect_size']:+.2g}"
    if claim["t_p_value"] is not None:
        text += f", p {claim['t_p_value']:.2g}"
    return text


def rise_then_fall(means: Sequence[float]) -> bool:
    """Whether a sequence peaks strictly inside (Mobahi et al.'s prediction over generations)."""
    if len(means) < 3:
        return False
    peak = max(range(len(means)), key=lambda i: means[i])
    return 0 < peak < len(means) - 1
