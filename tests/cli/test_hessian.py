"""`flatscape hessian`: numbers equal the library's, report fields, one-line errors."""

import json

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.sources import load_for_analysis
from landscape.curvature.measure import CurvatureRequest, measure_curvature
from landscape.operators.hessian import PRODUCT_RESERVE, HessianOperator
from tests.cli.helpers import assert_one_line_error

SMALL = ["--samples", "128", "--threads", "1", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_report_matches_the_library(mnist1d_teacher, tmp_path):
    out = tmp_path / "h.json"
    result = run("hessian", mnist1d_teacher, "--top-k", 2, "--trace", "--trace-matvecs", 9,
                 "--density", "--density-steps", 5, "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    loaded = load_for_analysis(mnist1d_teacher, samples=128, batch_size=128)
    request = CurvatureRequest(top_k=2, trace=True, trace_matvecs=9, density=True, density_steps=5)
    expected = measure_curvature(
        HessianOperator(loaded.model, torch.nn.functional.cross_entropy, loaded.batches), request
    )
    assert report["eigenvalues"] == pytest.approx(expected.eigen.eigenvalues.tolist(), rel=1e-6)
    assert report["trace"]["estimate"] == pytest.approx(expected.trace.estimate, rel=1e-6)
    assert report["trace"]["method"] == "hutchpp" and report["trace"]["matvecs"] == 9
    assert len(report["density"]["nodes"][0]) == 5
    assert report["checkpoint_sha256"] == loaded.sha256
    assert report["data"] == {
        "dataset": "mnist1d",
        "split": "train",
        "order": "first examples, dataset order, no augmentation",
        "batch_size": 128,
        "graphs_kept": True,
        "samples": 128,
    }
    assert report["loss"] == pytest.approx(expected.loss, rel=1e-6)
    assert report["matvecs"] == expected.matvecs and report["seconds"] > 0
    assert f"{report['eigenvalues'][0]:.6g}" in result.output


def test_default_batches_of_256_keep_their_graphs(mnist1d_teacher, tmp_path):
    out = tmp_path / "h.json"
    result = run("hessian", mnist1d_teacher, "--top-k", 2, "--samples", 600, "--json", out,
                 "--threads", 1, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["data"]["batch_size"] == 256 and report["data"]["graphs_kept"] is True
    loaded = load_for_analysis(mnist1d_teacher, samples=600, batch_size=600)
    one_batch = measure_curvature(
        HessianOperator(loaded.model, torch.nn.functional.cross_entropy, loaded.batches),
        CurvatureRequest(top_k=2),
    )
    assert report["eigenvalues"] == pytest.approx(one_batch.eigen.eigenvalues.tolist(), rel=1e-4)
    assert report["loss"] == pytest.approx(one_batch.loss, rel=1e-5)


def test_first_examples_in_dataset_order_eval_mode(mnist1d_teacher, tmp_path):
    out = tmp_path / "h.json"
    result = run("hessian", mnist1d_teacher, "--json", out, "--batch-size", 50, *SMALL)
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(mnist1d_teacher)
    from distill.data import dataset_from_description

    inputs, targets = dataset_from_description(meta["dataset"]).train_eval.tensors
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model.eval()(inputs[:128]), targets[:128])
    report = json.loads(out.read_text())
    assert report["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert report["data"]["batch_size"] == 50 and report["data"]["graphs_kept"] is False


def test_pyhessian_engine_agrees_within_half_a_percent(mnist1d_teacher, tmp_path):
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    assert run("hessian", mnist1d_teacher, "--json", ours, *SMALL).exit_code == 0
    result = run("hessian", mnist1d_teacher, "--engine", "pyhessian", "--json", theirs, *SMALL)
    assert result.exit_code == 0, result.output
    a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
    assert b["engine"] == "pyhessian" and b["hvp"] == "pyhessian"
    assert b["eigenvalues"][0] == pytest.approx(a["eigenvalues"][0], rel=5e-3)


def test_float64_and_power_engine(mnist1d_teacher, tmp_path):
    out = tmp_path / "h.json"
    result = run("hessian", mnist1d_teacher, "--float64", "--engine", "power", "--tol", 1e-2,
                 "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["dtype"] == "float64" and report["engine"] == "power"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--top-k", 100000], "top-k 100000"),
        (["--samples", 0], "'--samples': 0 is not in the range"),
        (["--samples", -3], "'--samples': -3 is not in the range"),
        (["--engine", "pyhessian", "--which", "smallest"], "need the lanczos engine"),
        (["--trace", "--trace-matvecs", 2], "--trace-matvecs 2"),
        (["--engine", "pyhessian", "--params", "classifier.*"], "needs engine lanczos or power"),
        (["--exclude", "*"], "leaves no parameter"),
        (["--params", "*.weight", "--exclude", "*"], "leaves no parameter"),
        (["--operator", "fisher", "--mc-samples", 0], "'--mc-samples': 0 is not in the range"),
    ],
)
def test_bad_input_is_one_line_exit_2(mnist1d_teacher, args, needle):
    assert_one_line_error(run("hessian", mnist1d_teacher, *args, "--quiet"), needle)


def test_nan_checkpoint_is_one_line_exit_2(mnist1d_teacher, tmp_path):
    model, meta = load_checkpoint(mnist1d_teacher)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    broken = save_checkpoint(tmp_path / "nan.safetensors", model, meta)
    assert_one_line_error(run("hessian", broken, *SMALL), "loss at these weights is nan")


def test_refuses_to_overwrite_without_force(mnist1d_teacher, tmp_path):
    out = tmp_path / "h.json"
    out.write_text("{}")
    assert_one_line_error(run("hessian", mnist1d_teacher, "--json", out, *SMALL), "--force")
    assert run("hessian", mnist1d_teacher, "--json", out, "--force", *SMALL).exit_code == 0


def test_max_memory_rebuilds_beyond_the_budget_and_reports_it(
    mnist1d_teacher, tmp_path, monkeypatch
):
    # the test process's own memory is not the point (and varies): count it as nothing
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)

    def hessian(budget):
        out = tmp_path / f"{budget}.json"
        result = run("hessian", mnist1d_teacher, "--top-k", 2, "--samples", 600,
                     "--max-memory", budget, "--json", out, "--threads", 1, "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())

    free = hessian("none")
    assert free["memory"]["budget"] is None and free["memory"]["kept_examples"] == 600
    batch_graph = free["memory"]["graph_bytes"] * 256 / 600  # batches of 256, 256, 88
    budget = int((1 + PRODUCT_RESERVE + 0.5) * batch_graph)  # one 256-batch and a product
    tight = hessian(str(budget))
    memory = tight["memory"]
    assert memory["budget"] == budget and 256 <= memory["kept_examples"] < 600
    assert memory["graph_bytes"] + PRODUCT_RESERVE * 0.9 * batch_graph <= budget
    assert memory["peak"] > 0
    assert tight["eigenvalues"] == pytest.approx(free["eigenvalues"], rel=1e-5)
    assert (
        "gradient graphs of"
        in CliRunner()
        .invoke(
            cli,
            [
                "hessian",
                str(mnist1d_teacher),
                "--samples",
                "600",
                "--max-memory",
                str(budget),
                "--threads",
                "1",
                "--quiet",
            ],  # fmt: skip
        )
        .output
    )


@pytest.mark.parametrize(
    "budget, needle",
    [("3XB", "memory size '3XB'"), ("10KB", "one batch of 256 examples holds 5 MiB")],
)
def test_max_memory_errors_are_one_line_exit_2(mnist1d_teacher, budget, needle, monkeypatch):
    monkeypatch.setattr("landscape.operators.memory.resident_bytes", lambda device: 0)
    result = run("hessian", mnist1d_teacher, "--samples", 600, "--max-memory", budget, *SMALL[2:])
    assert_one_line_error(result, needle)


def test_a_parameter_block_by_glob(mnist1d_teacher, tmp_path):
    out = tmp_path / "block.json"
    result = run("hessian", mnist1d_teacher, "--params", "features.*", "--exclude", "*.bias",
                 "--top-k", 2, "--tol", "1e-6", "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["parameters"] == 160 + 3072 + 3072
    assert report["params"] == {"include": ["features.*"], "exclude": ["*.bias"]}
    loaded = load_for_analysis(mnist1d_teacher, samples=128, batch_size=128)
    block = HessianOperator(loaded.model, torch.nn.functional.cross_entropy, loaded.batches,
                            params=["features.0.weight", "features.2.weight",
                                    "features.4.weight"])  # fmt: skip
    expected = measure_curvature(block, CurvatureRequest(top_k=2, tol=1e-6))
    assert report["eigenvalues"] == pytest.approx(expected.eigen.eigenvalues.tolist(), rel=1e-5)
    assert_one_line_error(run("hessian", mnist1d_teacher, "--params", "conv*", *SMALL),
                          "--params: 'conv*' matches no trainable parameter; the model's "
                          "trainable ones are features.0.weight")  # fmt: skip


def test_per_layer_table_json_markdown_and_plot(mnist1d_teacher, tmp_path):
    out, table, plot = tmp_path / "l.json", tmp_path / "l.md", tmp_path / "l.png"
    result = run("hessian", mnist1d_teacher, "--trace", "--per-layer-table", table,
                 "--per-layer-plot", plot, "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["per_layer"]
    assert [r["module"] for r in rows] == ["features.0", "features.2", "features.4", "classifier"]
    assert [r["size"] for r in rows] == [192, 3104, 3104, 3210]
    assert all(r["eigenvalues"][0] > 0 and r["trace"] > 0 for r in rows)
    assert table.read_text().startswith("| module | size | lambda_1 | trace |")
    assert plot.stat().st_size > 1000 and "classifier" in result.output
    bad = run("hessian", mnist1d_teacher, "--per-layer-table", tmp_path / "l.txt", *SMALL)
    assert_one_line_error(bad, "end it in .md or .csv")


@pytest.mark.parametrize("operator", ["fisher", "empirical-fisher"])
def test_fisher_operators_match_the_library(mnist1d_teacher, tmp_path, operator):
    from landscape.operators.fisher import FisherOperator

    out = tmp_path / "f.json"
    extra = ["--mc-samples", 3] if operator == "fisher" else []
    result = run("hessian", mnist1d_teacher, "--operator", operator, *extra, "--top-k", 2,
                 "--tol", "1e-6", "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    loaded = load_for_analysis(mnist1d_teacher, samples=128, batch_size=128)
    kind = {"fisher": {"kind": "mc", "mc_samples": 3}, "empirical-fisher": {"kind": "empirical"}}
    F = FisherOperator(loaded.model, torch.nn.functional.cross_entropy, loaded.batches,
                       seed=0, **kind[operator])  # fmt: skip
    expected = measure_curvature(F, CurvatureRequest(top_k=2, tol=1e-6))
    assert report["operator"] == operator and report["hvp"].startswith("fisher/")
    assert report["eigenvalues"] == pytest.approx(expected.eigen.eigenvalues.tolist(), rel=1e-4)


def test_fisher_needs_a_likelihood(mnist1d_teacher, tmp_path):
    loss = tmp_path / "smooth.py"
    loss.write_text("import torch.nn.functional as F\n\ndef smooth(z, y):\n"
                    "    return F.cross_entropy(z, y, label_smoothing=0.1)\n")  # fmt: skip
    result = run("hessian", mnist1d_teacher, "--operator", "fisher", "--loss",
                 f"{loss}:smooth", *SMALL)  # fmt: skip
    assert_one_line_error(result, "the Monte-Carlo Fisher needs a likelihood")
    assert_one_line_error(run("hessian", mnist1d_teacher, "--mc-samples", 4, *SMALL),
                          "--operator fisher only")  # fmt: skip


def test_resampled_spread_of_the_eigenvalues(mnist1d_teacher, tmp_path):
    out = tmp_path / "r.json"
    result = run("hessian", mnist1d_teacher, "--top-k", 2, "--resamples", 3, "--resample-size",
                 200, "--json", out, *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    resampling = json.loads(out.read_text())["resampling"]
    assert resampling["resamples"] == 3 and resampling["examples"] == 4000
    first = resampling["eigenvalues"][0]
    assert len(first["values"]) == 3 and first["std"] > 0 and "over 3 disjoint" in result.output
    from landscape.curvature.resampling import subset_indices

    everything = load_for_analysis(mnist1d_teacher, batch_size=4000)
    x, y = everything.batches[0]
    index = subset_indices(4000, 3, 200, bootstrap=False, seed=0)[1]
    direct = measure_curvature(
        HessianOperator(everything.model, torch.nn.functional.cross_entropy,
                        [(x[index], y[index])]), CurvatureRequest(top_k=2, seed=1))  # fmt: skip
    assert first["values"][1] == pytest.approx(direct.eigenvalues[0], rel=1e-5)
    too_many = run("hessian", mnist1d_teacher, "--resamples", 9, "--resample-size", 500, *SMALL)
    assert_one_line_error(too_many, "4500 disjoint examples, but the data has 4000")
    assert "or pass --bootstrap" in too_many.stderr


def test_impossible_resamples_are_refused_before_measuring(mnist1d_teacher, monkeypatch):
    import landscape.distributed.operator as parallel

    def measured(*args, **kwargs):
        raise AssertionError("measured before the subsets were checked")

    monkeypatch.setattr(parallel, "data_parallel_curvature", measured)
    for extra in (["--resamples", 9, "--resample-size", 500],
                  ["--resamples", 2, "--resample-size", 5000, "--bootstrap"]):  # fmt: skip
        result = run("hessian", mnist1d_teacher, *extra, *SMALL)
        assert_one_line_error(result, "--resample")
