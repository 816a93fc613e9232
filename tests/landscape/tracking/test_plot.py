"""Reading tracked logs and drawing lambda_1 against steps."""

import json

import pytest

from landscape.errors import LandscapeInputError
from landscape.tracking.plot import plot_sharpness, read_tracked


def _log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_tracked_keeps_lambda_1_records_in_order(tmp_path):
    log = _log(tmp_path / "run.log.jsonl", [
        {"step": 5, "lambda_1": 2.0, "stability_threshold": 38.0},
        {"epoch": 1, "loss": 0.3},
        {"step": 10, "lambda_1": 3.0},
    ])  # fmt: skip
    assert [r["step"] for r in read_tracked(log)] == [5, 10]
    figure = plot_sharpness([log, log], tmp_path / "f.svg", labels=["teacher", "student"])
    text = figure.read_text()
    assert "teacher" in text and "student" in text


@pytest.mark.parametrize(
    "content, message",
    [("{not json\n", "line 1 is not JSON"), ('{"epoch": 1}\n', "no lambda_1 records")],
)
def test_bad_logs_are_one_line(tmp_path, content, message):
    path = tmp_path / "run.log.jsonl"
    path.write_text(content)
    with pytest.raises(LandscapeInputError, match=message):
        read_tracked(path)
    with pytest.raises(LandscapeInputError, match="cannot read"):
        read_tracked(tmp_path / "missing.log.jsonl")
