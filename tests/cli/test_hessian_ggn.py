"""`flatscape hessian --operator ggn`: the library's GGN numbers, and refused combinations."""

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.sources import load_for_analysis
from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.operators.ggn import GGNOperator

SMALL = ["--samples", "128", "--threads", "1", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_ggn_report_matches_the_library(mnist1d_teacher, tmp_path):
    out = tmp_path / "g.json"
    result = run("hessian", mnist1d_teacher, "--operator", "ggn", "--top-k", 2, "--trace",
                 "--trace-matvecs", 9, "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    loaded = load_for_analysis(mnist1d_teacher, samples=128, batch_size=128)
    expected = measure_curvature(
        GGNOperator(loaded.model, torch.nn.functional.cross_entropy, loaded.batches),
        CurvatureRequest(top_k=2, trace=True, trace_matvecs=9),
    )
    assert report["operator"] == "ggn" and report["hvp"] == "ggn/cross_entropy"
    assert report["eigenvalues"] == pytest.approx(expected.eigen.eigenvalues.tolist(), rel=1e-6)
    assert report["trace"]["estimate"] == pytest.approx(expected.trace.estimate, rel=1e-6)
    assert f"{report['eigenvalues'][0]:.6g}" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--engine", "pyhessian"], "pyhessian"),
        (["--hvp", "auto"], "--hvp"),
        (["--operator", "newton"], "--operator"),
    ],
)
def test_refused_combinations_are_one_line(mnist1d_teacher, args, needle):
    result = run("hessian", mnist1d_teacher, "--operator", "ggn", *args, *SMALL)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
