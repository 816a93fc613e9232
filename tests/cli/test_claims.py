"""The paper's claims counted over seeds, on hand-made records."""

from cli.study import claims_table, rise_then_fall
from tests.landscape.compare.test_table import _records


def test_claims_table_verdicts():
    rows = {r["measure"]: r for r in claims_table(_records())}
    assert rows["test_accuracy"]["wins"] == 2 and rows["test_accuracy"]["verdict"] == "mixed"
    assert rows["lambda_1"]["wins"] == 1
    assert "trace" not in rows  # not measured: no claim row
    records = [r | {"test_accuracy": 1.0} if r["generation"] else r for r in _records()]
    assert {r["measure"]: r for r in claims_table(records)}["test_accuracy"]["verdict"] == "holds"


def test_rise_then_fall():
    assert rise_then_fall([0.90, 0.92, 0.91])
    assert not rise_then_fall([0.90, 0.91, 0.92]) and not rise_then_fall([0.9, 0.8])
