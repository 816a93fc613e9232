"""Comparison tables and per-seed win counts, on hand-made records."""

import csv
import io

import pytest

from landscape.compare.table import (
    by_generation,
    count_wins,
    relative_change,
    to_csv,
    to_markdown,
    with_changes,
)


def _records():
    # seed: (teacher acc, gen1 acc, teacher lambda, gen1 lambda)
    table = {0: (0.90, 0.92, 2.0, 3.0), 1: (0.91, 0.90, 2.0, 1.0), 2: (0.88, 0.89, 2.5, 2.5)}
    records = []
    for seed, (ta, sa, tl, sl) in table.items():
        records.append({"name": f"t{seed}", "seed": seed, "generation": 0,
                        "test_accuracy": ta, "lambda_1": tl})  # fmt: skip
        records.append({"name": f"s{seed}", "seed": seed, "generation": 1,
                        "test_accuracy": sa, "lambda_1": sl})  # fmt: skip
    return records


def test_count_wins_counts_by_hand():
    records = _records()
    assert count_wins(records, 1, "test_accuracy", lower_is_better=False) == {"wins": 2, "seeds": 3}
    # seed 2 ties on lambda_1: a tie is not a win.
    assert count_wins(records, 1, "lambda_1", lower_is_better=True) == {"wins": 1, "seeds": 3}


def test_summary_by_generation():
    summary = by_generation(_records(), ["test_accuracy"])
    teacher = summary[0]["test_accuracy"]
    assert teacher["mean"] == pytest.approx((0.90 + 0.91 + 0.88) / 3)
    assert teacher["std"] == pytest.approx(0.015275, rel=1e-4) and teacher["n"] == 3


def test_markdown_csv_and_rows_agree():
    rows = with_changes(_records()[:2], ["test_accuracy", "lambda_1"])
    columns = ["name", "test_accuracy", "lambda_1", "lambda_1_change"]
    assert rows[1]["lambda_1_change"] == pytest.approx(0.5)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows, columns))))
    for row, line in zip(rows, parsed, strict=True):
        assert float(line["lambda_1"]) == row["lambda_1"]
    markdown = to_markdown(rows, columns)
    assert "+50.0%" in markdown and "| t0 | 0.9000 | 2 |" in markdown


def test_relative_change_edge_cases():
    assert relative_change(None, 1.0) is None and relative_change(1.0, 0.0) is None
    assert relative_change(-1.0, -2.0) == pytest.approx(0.5)
