"""`flatscape eigenmap`: a map of a trained checkpoint, its plots, and one-line errors."""

import json

import numpy as np
from click.testing import CliRunner

from cli.main import cli
from landscape.surface.store import SurfaceStore


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_eigenmap_of_a_checkpoint_plots_and_refuses_bad_grids(tmp_path, mnist1d_teacher):
    out, summary = tmp_path / "eig.h5", tmp_path / "eig.json"
    common = ["--samples", "64", "--threads", "1", "--quiet"]
    done = run("eigenmap", mnist1d_teacher, "--x", "-0.5:0.5:2", "--y", "none", *common,
               "--out", out, "--json", summary)  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads(summary.read_text())
    assert result["points"] == result["computed"] == result["converged"] == 2
    with SurfaceStore.read(out) as store:
        top, bottom = store.arrays["lambda_max"], store.arrays["lambda_min"]
        assert store.attrs["direction"] == "random" and store.attrs["normalization"] == "filter"
    assert np.all(top > 0) and np.all(bottom < top)
    line = run("plot", out, "--kind", "line", "--out", tmp_path / "line.png")
    assert line.exit_code == 0, line.output

    for args, needle in (
        (["--x", "-1:1:22", "--y", "-1:1:21"], "more than 441"),
        (["--x", "1:-1:3"], "--x"),
        (["--tol", "2"], "--tol"),
    ):
        bad = run("eigenmap", mnist1d_teacher, *args, *common, "--out", tmp_path / "bad.h5")
        assert bad.exit_code == 2 and needle in bad.output, bad.output
        assert not (tmp_path / "bad.h5").exists()
    exists = run("eigenmap", mnist1d_teacher, "--x", "-0.5:0.5:2", "--y", "none", *common,
                 "--out", out)  # fmt: skip
    assert exists.exit_code == 2 and "--resume" in exists.output


def test_eigenmap_of_a_parameter_block(tmp_path, mnist1d_teacher):
    import torch

    from distill.sources import load_for_analysis
    from landscape.curvature.eigen.lanczos import lanczos
    from landscape.operators.hessian import HessianOperator

    out = tmp_path / "block.h5"
    common = ["--samples", "64", "--threads", "1", "--quiet", "--y", "none"]
    done = run("eigenmap", mnist1d_teacher, "--x", "0:0.5:2", "--params", "classifier.*",
               "--tol", "1e-6", *common, "--out", out)  # fmt: skip
    assert done.exit_code == 0, done.output
    loaded = load_for_analysis(mnist1d_teacher, samples=64)
    block = HessianOperator(loaded.model, torch.nn.functional.cross_entropy, loaded.batches,
                            params=["classifier.weight", "classifier.bias"])  # fmt: skip
    expected = float(lanczos(block, k=1, tol=1e-8).eigenvalues[0])
    with SurfaceStore.read(out) as store:
        assert abs(store.arrays["lambda_max"][0] - expected) <= 1e-5 * expected
        assert json.loads(store.attrs["params"]) == {"include": ["classifier.*"], "exclude": []}
    bad = run("eigenmap", mnist1d_teacher, "--x", "0:0.5:2", "--params", "nothing.*", *common,
              "--out", tmp_path / "bad.h5")  # fmt: skip
    assert bad.exit_code == 2 and "matches no trainable parameter" in bad.output
    assert not (tmp_path / "bad.h5").exists()


def test_warm_and_cold_starts_give_the_same_map_to_tol(tmp_path, mnist1d_teacher):
    common = ["--x", "-0.1:0.1:3", "--y", "none", "--samples", "64", "--threads", "1",
              "--quiet", "--tol", "1e-3"]  # fmt: skip
    maps, summaries = {}, {}
    for flag in ("", "--cold-start"):
        out, summary = tmp_path / f"eig{flag}.h5", tmp_path / f"eig{flag}.json"
        done = run("eigenmap", mnist1d_teacher, *common, *([flag] if flag else []), "--out", out,
                   "--json", summary)  # fmt: skip
        assert done.exit_code == 0, done.output
        summaries[flag] = json.loads(summary.read_text())
        with SurfaceStore.read(out) as store:
            maps[flag] = {k: np.asarray(v) for k, v in store.arrays.items()}
            assert store.attrs["warm_start"] == (flag == "")
    assert summaries[""]["converged"] == summaries["--cold-start"]["converged"] == 3
    assert summaries[""]["matvecs"] < summaries["--cold-start"]["matvecs"]
    top = maps["--cold-start"]["lambda_max"]
    assert np.abs(maps[""]["lambda_max"] - top).max() <= 2e-3 * np.abs(top).max()
    assert np.abs(maps[""]["lambda_min"] - maps["--cold-start"]["lambda_min"]).max() <= (
        2e-3 * np.abs(top).max()
    )
