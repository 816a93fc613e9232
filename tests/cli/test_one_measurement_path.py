"""`compare` measures each model as `hessian` does: the same lambda_1 on the same examples."""

import json

from click.testing import CliRunner

from cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_compare_reports_the_lambda_1_hessian_reports(tmp_path, mnist1d_teacher, mnist1d_student):
    common = ["--samples", "512", "--top-k", "2", "--tol", "1e-3", "--threads", "1"]
    report = tmp_path / "c.json"
    compared = run("compare", mnist1d_teacher, mnist1d_student, *common, "--trace-matvecs", "0",
                   "--line-points", "0", "--quiet", "--json", report)  # fmt: skip
    assert compared.exit_code == 0, compared.output
    models = json.loads(report.read_text())["models"]
    for path, model in zip((mnist1d_teacher, mnist1d_student), models, strict=True):
        out = tmp_path / f"{path.stem}.json"
        measured = run("hessian", path, *common, "--json", out)
        assert measured.exit_code == 0, measured.output
        hessian = json.loads(out.read_text())
        assert hessian["data"]["graphs_kept"] and hessian["data"]["batch_size"] == 256
        for mine, theirs in zip(model["eigenvalues"], hessian["eigenvalues"], strict=True):
            assert abs(mine - theirs) <= 1e-4 * abs(theirs)
        assert model["eigen_matvecs"] == hessian["eigen_matvecs"]  # the same run, step by step


def test_compare_is_bounded_by_max_memory_as_hessian_is(tmp_path, mnist1d_teacher, monkeypatch):
    """The same budget, the same refusal: one batch's graph cannot fit in 200 KB."""
    from tests.cli.helpers import assert_one_line_error

    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    common = ["--samples", "256", "--top-k", "1", "--max-memory", "200KB", "--threads", "1"]
    hessian = run("hessian", mnist1d_teacher, *common)
    compared = run("compare", mnist1d_teacher, mnist1d_teacher, *common, "--trace-matvecs", "0",
                   "--line-points", "0", "--quiet")  # fmt: skip
    for result in (hessian, compared):
        assert_one_line_error(result, "--max-memory 200 KiB: one batch of 256 examples holds")
    assert hessian.stderr == compared.stderr


def test_max_memory_and_batch_size_are_not_both_taken(mnist1d_teacher):
    from tests.cli.helpers import assert_one_line_error

    result = run("hessian", mnist1d_teacher, "--batch-size", "64", "--max-memory", "3GB")
    assert_one_line_error(result, "pass --max-memory (graphs kept within it) or --batch-size")
