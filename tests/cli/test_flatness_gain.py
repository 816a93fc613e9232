"""Does flatness explain the gain? The tau table from sweep rows and reproduce records."""

import itertools

import numpy as np
import pytest
from scipy import stats

from cli.study import (
    Pair,
    change,
    flatness_vs_gain,
    flatness_vs_gain_figure,
    flatness_vs_gain_lines,
    pairs_from_records,
    sweep_pairs,
)
from cli.study.flatness_gain import GainSettings
from landscape import granulated_tau

RECIPES = [{"name": f"T{t}-e{e}", "temperature": t, "alpha": 1.0, "epochs": e, "lr": "teacher"}
           for t in (1.0, 4.0) for e in (1, 2)]  # fmt: skip


def _sweep_rows(barrier=False):
    """Hand-made sweep rows: 2 widths x 3 seeds x 4 recipes, one collapsed."""
    rng = np.random.default_rng(0)
    rows = []
    for width, seed, recipe in itertools.product((16, 32), range(3), RECIPES):
        teacher = {"test_accuracy": 0.8 + 0.01 * seed, "lambda_1": 10.0 + width / 8,
                   "trace": 100.0, "train_loss": 0.5}  # fmt: skip
        student = {"test_accuracy": teacher["test_accuracy"] + rng.normal(0, 0.02),
                   "lambda_1": teacher["lambda_1"] * rng.uniform(0.5, 1.5),
                   "trace": rng.uniform(50, 150), "train_loss": 0.4}  # fmt: skip
        row = {"regime": "clean", "width": width, "seed": seed, "recipe": recipe["name"],
               "teacher": teacher, "student": student, "collapsed": False,
               "matched_lambda_1": rng.uniform(1, 3), "teacher_matched_lambda_1": 2.0}  # fmt: skip
        if barrier:
            row["barrier"] = rng.uniform(0, 1)
        rows.append(row)
    rows[5] = {**rows[5], "collapsed": True, "student": None, "gain": None}
    return rows


def test_tau_of_sweep_rows_equals_scipy_on_the_stored_values():
    rows = _sweep_rows()
    result = flatness_vs_gain(sweep_pairs(rows, RECIPES), GainSettings(resamples=200))
    kept = [r for r in rows if not r["collapsed"]]
    gains = [r["student"]["test_accuracy"] - r["teacher"]["test_accuracy"] for r in kept]
    changes = {
        "lambda_1": [r["student"]["lambda_1"] / r["teacher"]["lambda_1"] for r in kept],
        "trace": [r["student"]["trace"] / r["teacher"]["trace"] for r in kept],
        "matched_lambda_1": [r["matched_lambda_1"] / 2.0 for r in kept],
    }
    by_measure = {r["measure"]: r for r in result["rows"]}
    assert set(by_measure) == set(changes)  # only what was measured
    for measure, values in changes.items():
        row = by_measure[measure]
        assert row["n"] == 23 and row["change"] == "ratio"
        assert row["tau"] == pytest.approx(stats.kendalltau(values, gains).statistic, abs=1e-12)
        assert row["ci_low"] <= row["tau"] <= row["ci_high"]
        assert set(row["granulated"]) == {"temperature", "epochs", "width"}
    assert result["pairs"] == 23 and result["teachers"] == 6
    assert result["hyperparameters"] == ["epochs", "temperature", "width"]  # those that vary
    assert result == flatness_vs_gain(sweep_pairs(rows, RECIPES), GainSettings(resamples=200))


def test_pair_measures_are_taken_by_name_when_present():
    rows = _sweep_rows(barrier=True)
    result = flatness_vs_gain(sweep_pairs(rows, RECIPES), GainSettings(resamples=50))
    barrier = {r["measure"]: r for r in result["rows"]}["barrier"]
    kept = [r for r in rows if not r["collapsed"]]
    gains = [r["student"]["test_accuracy"] - r["teacher"]["test_accuracy"] for r in kept]
    assert barrier["change"] == "pair"
    expected = stats.kendalltau([r["barrier"] for r in kept], gains).statistic
    assert barrier["tau"] == pytest.approx(expected, abs=1e-12)


def test_change_is_a_ratio_for_a_model_measure_and_the_value_for_a_pair_measure():
    pair = Pair({"lambda_1": 4.0, "avg_sharpness": -0.1}, {"lambda_1": 2.0, "barrier": 0.3,
                "avg_sharpness": 0.2, "agreement": 0.9})  # fmt: skip
    assert change(pair, "lambda_1") == 0.5
    assert change(pair, "barrier") == 0.3 and change(pair, "agreement") == 0.9
    assert change(pair, "avg_sharpness") is None  # the teacher's value is not positive
    assert change(pair, "trace") is None


def test_reproduce_records_pair_with_their_seed_teacher_and_degenerate_tables_say_why(tmp_path):
    records = []
    for seed, generation in itertools.product(range(2), range(3)):
        accuracy, curvature = 0.9 + 0.01 * generation, 3.0 - generation
        records.append({"variant": "mnist1d", "seed": seed, "generation": generation,
                        "test_accuracy": accuracy, "lambda_1": curvature})  # fmt: skip
    pairs = pairs_from_records(records)
    assert [(p.teacher["seed"], p.student["generation"]) for p in pairs] == [
        (0, 1), (0, 2), (1, 1), (1, 2)]  # fmt: skip
    result = flatness_vs_gain(pairs, GainSettings(resamples=100))
    (row,) = result["rows"]
    # the gain is 0.01 or 0.02 and the ratio 2/3 or 1/3: tau-b = -1
    assert row["tau"] == pytest.approx(-1.0) and row["granulated_tau"] == pytest.approx(-1.0)
    lines = "\n".join(flatness_vs_gain_lines(result, "tau.png"))
    assert "| λ1 | -1.00 |" in lines and "![" in lines and "With 2 teachers" in lines
    assert flatness_vs_gain_figure(result, tmp_path / "tau.png").stat().st_size > 1000
    few = flatness_vs_gain(pairs[:2])
    assert few["rows"][0]["tau"] is None
    assert "fewer than 3 complete pairs (n=2)" in "\n".join(flatness_vs_gain_lines(few))
    assert flatness_vs_gain_figure(few, tmp_path / "none.png") is None
    assert flatness_vs_gain_lines(flatness_vs_gain([]))[0].startswith("No measure")


def test_variants_pool_with_granulated_tau_over_variant_and_generation():
    records = []
    for variant, seed, generation in itertools.product(("clean", "noisy"), range(3), range(3)):
        shift = 0.05 if variant == "noisy" else 0.0
        records.append({"variant": variant, "seed": seed, "generation": generation,
                        "test_accuracy": 0.8 + shift * generation + 0.01 * seed * generation,
                        "trace": 10.0 * (1 + generation * (0.5 - shift - 0.1 * seed))})  # fmt: skip
    pairs = pairs_from_records(records, ("variant", "generation"))
    assert len(pairs) == 12 and {p.cluster for p in pairs} == {
        f"{v}/seed{s}" for v in ("clean", "noisy") for s in range(3)}  # fmt: skip
    result = flatness_vs_gain(pairs, GainSettings(resamples=100))
    (row,) = result["rows"]
    table = [{**p.settings, "seed": p.seed, "x": change(p, "trace"),
              "y": p.student["test_accuracy"] - p.teacher["test_accuracy"]}
             for p in pairs]  # fmt: skip
    expected = granulated_tau(table, "x", "y", ["variant", "generation"], fixed=["seed"])
    assert row["granulated_tau"] == pytest.approx(expected.value)
    assert set(row["granulated"]) == {"variant", "generation"}
    assert result["hyperparameters"] == ["generation", "variant"]
