"""The paper's claims counted and tested over seeds, on hand-made records."""

import pytest
from scipy import stats

from cli.study import claims_table, rise_then_fall
from cli.study.claims import claim_cell
from tests.landscape.compare.test_table import _records


def test_claims_carry_the_count_and_the_paired_test():
    rows = {r["measure"]: r for r in claims_table(_records())}
    accuracy = rows["test_accuracy"]
    assert accuracy["wins"] == 2 and accuracy["seeds"] == 3  # the count stays a column
    reference = stats.ttest_rel([0.92, 0.90, 0.89], [0.90, 0.91, 0.88])
    assert accuracy["t_p_value"] == pytest.approx(reference.pvalue)
    assert accuracy["verdict"] == "not significant"
    assert rows["lambda_1"]["wins"] == 1
    assert "trace" not in rows  # not measured: no claim row
    records = [r | {"test_accuracy": r["test_accuracy"] + 0.1 + 0.01 * r["seed"]}
               if r["generation"] else r for r in _records()]  # fmt: skip
    better = {r["measure"]: r for r in claims_table(records)}["test_accuracy"]
    assert better["t_p_value"] < 0.05 and better["verdict"] == "holds"
    assert claim_cell(better).startswith("3/3, d_z +")
    worse = [r | {"lambda_1": 10 + 0.1 * r["seed"]}
             if r["generation"] else r for r in _records()]  # fmt: skip
    assert {r["measure"]: r for r in claims_table(worse)}["lambda_1"]["verdict"] == "reversed"


def test_two_seeds_are_untested():
    two = [r for r in _records() if r["seed"] < 2]
    accuracy = {r["measure"]: r for r in claims_table(two)}["test_accuracy"]
    assert accuracy["verdict"] == "untested" and "fewer than 3" in accuracy["note"]
    assert claim_cell(accuracy) == "1/2"


def test_rise_then_fall():
    assert rise_then_fall([0.90, 0.92, 0.91])
    assert not rise_then_fall([0.90, 0.91, 0.92]) and not rise_then_fall([0.9, 0.8])
