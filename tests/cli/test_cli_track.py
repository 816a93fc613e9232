"""`train/distill --track-sharpness`: lambda_1 in the run's log, equal to `hessian` at the end."""

import json

from click.testing import CliRunner

from cli.main import cli
from distill.checkpoint import file_sha256


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _records(log):
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in lines if "epoch" in r and "step" not in r], [r for r in lines if "step" in r]


def test_tracked_training_logs_lambda_1_and_ends_at_hessians_value(tmp_path):
    args = ["train", "--dataset", "synthetic", "--epochs", "2", "--seed", "3", "--quiet",
            "--threads", "1"]  # fmt: skip
    tracked = tmp_path / "tracked.safetensors"
    done = run(*args, "--track-sharpness", "5", "--track-every-epoch", "--track-samples", "96",
               "--out", tracked)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert run(*args, "--out", tmp_path / "plain.safetensors").exit_code == 0
    # tracking looks at the model and gives it back: training is the same to the bit
    assert file_sha256(tracked) == file_sha256(tmp_path / "plain.safetensors")

    epochs, steps = _records(tracked.with_suffix(".log.jsonl"))
    assert [r["epoch"] for r in epochs] == [1, 2]
    per_epoch = steps[-1]["step"] // 2
    expected = sorted({*range(5, 2 * per_epoch + 1, 5), per_epoch, 2 * per_epoch})
    assert [r["step"] for r in steps] == expected
    for record in steps:
        assert record["converged"] and record["probe_examples"] == 96
        assert record["stability_threshold"] == (2 + 2 * record["momentum"]) / record["lr"]
        assert {"lambda_1", "residual", "matvecs", "loss", "probe_loss", "epoch"} <= set(record)
    later = [r["matvecs"] for r in steps[1:]]
    assert sum(later) / len(later) < steps[0]["matvecs"]  # warm starts after the first

    report = tmp_path / "h.json"
    hessian = run("hessian", tracked, "--samples", "96", "--threads", "1", "--quiet",
                  "--json", report)  # fmt: skip
    assert hessian.exit_code == 0, hessian.output
    reference = json.loads(report.read_text())
    top, last = reference["eigenvalues"][0], steps[-1]["lambda_1"]
    assert abs(last - top) <= 2e-3 * top  # both to tol 1e-3 (one warm-started)
    assert steps[-1]["probe_loss"] == reference["loss"]


def test_a_looser_track_tol_is_certified_and_ends_at_hessians_value(tmp_path):
    """--track-tol 1e-2: every residual within 1e-2 of lambda_1, fewer products in all."""
    args = ["train", "--dataset", "synthetic", "--epochs", "3", "--seed", "3", "--quiet",
            "--threads", "1", "--track-every-epoch", "--track-samples", "96"]  # fmt: skip
    logs = {}
    for tol in ("1e-3", "1e-2"):
        out = tmp_path / f"tol{tol}.safetensors"
        done = run(*args, "--track-tol", tol, "--out", out)
        assert done.exit_code == 0, done.output
        logs[tol] = _records(out.with_suffix(".log.jsonl"))[1]
    for record in logs["1e-2"]:
        assert record["converged"] and record["residual"] <= 1e-2 * record["lambda_1"]
    assert sum(r["matvecs"] for r in logs["1e-2"]) <= sum(r["matvecs"] for r in logs["1e-3"])
    for loose, tight in zip(logs["1e-2"], logs["1e-3"], strict=True):
        # an eigenvalue lies within each residual of its Ritz value: the two agree to 1.1e-2
        assert abs(loose["lambda_1"] - tight["lambda_1"]) <= 1.1e-2 * tight["lambda_1"]


def test_distill_tracks_each_generation_from_a_cold_start(tmp_path, mnist1d_teacher):
    """Then `plot` draws the teacher-free family's logs in one figure, and refuses misuse."""
    done = run("distill", "--teacher", mnist1d_teacher, "--generations", "2", "--epochs", "1",
               "--track-every-epoch", "--track-trace", "--track-samples", "64", "--quiet",
               "--threads", "1", "--out-dir", tmp_path / "sd")  # fmt: skip
    assert done.exit_code == 0, done.output
    for name in ("gen1", "gen2"):
        epochs, steps = _records(tmp_path / "sd" / f"{name}.log.jsonl")
        assert len(epochs) == 1 and len(steps) == 1  # the epoch's end is the last step
        assert steps[0]["lambda_1"] > 0 and steps[0]["trace"] is not None
    logs = [tmp_path / "sd" / f"{name}.log.jsonl" for name in ("gen1", "gen2")]
    figure = tmp_path / "sharpness.png"
    drawn = run("plot", *logs, "--log", "--out", figure)
    assert drawn.exit_code == 0, drawn.output
    assert figure.stat().st_size > 1000
    for args, needle in ((["--kind", "contour"], "--kind applies to surface files"),
                         (["--label", "one"], "--label given 1 times")):  # fmt: skip
        bad = run("plot", *logs, *args, "--out", tmp_path / "bad.png")
        assert bad.exit_code == 2 and needle in bad.output, bad.output
    untracked = tmp_path / "epochs.log.jsonl"
    untracked.write_text('{"epoch": 1, "loss": 0.5}\n')
    bad = run("plot", untracked, "--out", tmp_path / "bad.png")
    assert bad.exit_code == 2 and "no lambda_1 records" in bad.output
    assert not (tmp_path / "bad.png").exists()


def test_bad_tracking_options_are_one_line(tmp_path):
    for args in (["--track-sharpness", "0"], ["--track-samples", "0"], ["--track-tol", "0"],
                 ["--track-tol", "1"]):  # fmt: skip
        bad = run("train", "--dataset", "synthetic", "--epochs", "1", *args,
                  "--out", tmp_path / "x.safetensors")  # fmt: skip
        assert bad.exit_code == 2 and "--track" in bad.output
        assert not (tmp_path / "x.safetensors").exists()
