"""The `reproduce` report: Markdown with tables and figures, and the same numbers as JSON."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cli.study.claims import SIGNIFICANCE, claim_cell, claims_table, rise_then_fall  # noqa: E402
from cli.study.flatness_gain import (  # noqa: E402
    flatness_vs_gain,
    flatness_vs_gain_figure,
    flatness_vs_gain_lines,
    pairs_from_records,
)
from landscape.atomic_files import save_figure, write_text_atomically  # noqa: E402
from landscape.compare.table import (  # noqa: E402
    by_generation,
    summarize,
    to_markdown,
)
from landscape.pairs.path import PATH_POINTS  # noqa: E402
from landscape.surface.plot import Surface, line_figure  # noqa: E402

MEASURES = ("test_accuracy", "train_loss", "lambda_1", "trace", "surface_width")
CONFOUNDS = ("ggn_lambda_1", "avg_sharpness", "worst_sharpness", "matched_lambda_1")
LABELS = {
    "test_accuracy": "test accuracy",
    "train_loss": "train loss",
    "lambda_1": "λ1",
    "trace": "trace",
    "surface_width": "basin width",
    "ggn_lambda_1": "GGN λ1",
    "avg_sharpness": "avg adaptive sharpness",
    "worst_sharpness": "worst adaptive sharpness",
    "matched_lambda_1": "matched λ1",
    "barrier": "loss barrier",
    "aligned_barrier": "aligned loss barrier",
    "agreement": "agreement (%)",
    "kl": "KL(T‖S)",
}
PAIR_TABLE = ("barrier", "aligned_barrier", "agreement", "kl")
"""The pair measures of each student against its seed's teacher, in the report's table."""


def _pm(summary: dict[str, Any], accuracy: bool = False) -> str:
    if summary["mean"] is None:
        return "—"
    if accuracy:
        return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"
    return f"{summary['mean']:.4g} ± {summary['std']:.2g}"


def measures_of(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The report's measures, with the confound-controlled ones where they were measured."""
    extra = tuple(m for m in CONFOUNDS if any(r.get(m) is not None for r in records))
    return MEASURES + extra


def _summary_row(summary: dict[str, Any], measures: tuple[str, ...]) -> dict[str, str]:
    return {LABELS[m]: _pm(summary[m], m == "test_accuracy") for m in measures}


def generation_table(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Mean ± std across seeds per generation, as rows and as Markdown."""
    measures = measures_of(records)
    summary = by_generation(records, measures)
    rows = [
        {
            "generation": s["generation"],
            "seeds": s["test_accuracy"]["n"],
            **_summary_row(s, measures),
        }
        for s in summary
    ]
    columns = ["generation", "seeds"] + [LABELS[m] for m in measures]
    return summary, to_markdown(rows, columns).replace("test accuracy", "test accuracy (%)")


def save_lines(curves: list[dict[str, Any]], path: Path, direction: str, log: bool = True) -> Path:
    """Overlay 1D curves (``label``, ``x``, ``loss``, ``acc``) in flatscape's plot style."""
    surfaces = [
        Surface(
            c["label"],
            np.asarray(c["x"]),
            None,
            {"train_loss": np.asarray(c["loss"]), "train_acc": np.asarray(c["acc"])},
            {"direction": direction},
        )
        for c in curves
    ]
    fig = line_figure(surfaces, None, None, log)
    save_figure(fig, path)
    return path


def _figure_lines(records, path: Path) -> None:
    curves = [
        {"label": r["name"], "x": r["line_x"], "loss": r["line_loss"], "acc": r["line_acc"]}
        for r in sorted(records, key=lambda r: r["generation"])
        if r.get("line_x")
    ]
    if curves:
        save_lines(curves, path, "filter-normalized")


def _figure_generations(summary, path: Path, title: str) -> None:
    measures = ("test_accuracy", "lambda_1", "trace", "surface_width")
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), constrained_layout=True)
    gens = [s["generation"] for s in summary]
    for ax, m in zip(axes, measures, strict=True):
        means = [s[m]["mean"] for s in summary]
        if any(v is None for v in means):
            ax.set_visible(False)
            continue
        stds = [s[m]["std"] for s in summary]
        ax.errorbar(gens, means, yerr=stds, marker="o", capsize=3)
        ax.set(xlabel="generation", title=LABELS[m], xticks=gens)
    fig.suptitle(title)
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def _claims_section(main: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    claims = claims_table(main)
    lines = [
        "Per seed, a student 'wins' when it beats the teacher of its own seed (higher "
        "accuracy or width; lower λ1 or trace; ties count as losses). Each claim is tested "
        "on the per-seed differences student minus teacher: d_z is their mean over their "
        "standard deviation; p the two-sided paired t-test (the Wilcoxon signed-rank p "
        "beside it cannot fall below 2/2^n: 0.25 with 3 seeds). Verdict: holds or reversed "
        f"when the t-test's p < {SIGNIFICANCE}, else not significant (untested below 3 "
        "seeds).",
        "",
        to_markdown(
            [
                {
                    **c,
                    "count": f"{c['wins']}/{c['seeds']}",
                    "d_z": c["effect_size"],
                    "p (t)": c["t_p_value"],
                    "p (Wilcoxon)": c["wilcoxon_p_value"],
                }
                for c in claims
            ],
            ["generation", "claim", "count", "d_z", "p (t)", "p (Wilcoxon)", "verdict"],
        ),
    ]
    return claims, lines


def pair_section(
    main: list[dict[str, Any]], samples: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per student generation, the pair measures against the seed's teacher: mean ± std."""
    students = [r for r in main if r["generation"] > 0 and "barrier" in r]
    if not students:
        return [], []
    summary = by_generation(students, PAIR_TABLE)
    rows = [{"generation": s["generation"], "seeds": s["barrier"]["n"],
             **{LABELS[m]: _pm(s[m], m == "agreement") for m in PAIR_TABLE}}
            for s in summary]  # fmt: skip
    refused = sorted({r["name"] for r in students if "refused" in (r.get("alignment") or {})})
    note = [f"Alignment refused for {', '.join(refused)} (`alignment` in report.json)."]
    return summary, [
        f"Each student against its seed's teacher on the first {samples} train examples: "
        "the loss barrier on the straight path teacher -> student (the largest rise of the "
        f"loss above the chord of the end losses, {PATH_POINTS} points, BatchNorm statistics "
        "recomputed at each), the same after aligning the student to the teacher by "
        "weight matching, top-1 agreement and KL(teacher ‖ student) in nats. Mean ± std "
        "over seeds; report.json has the test-split and accuracy barriers beside them.",
        *(note if refused else []),
        "",
        to_markdown(rows, ["generation", "seeds"] + [LABELS[m] for m in PAIR_TABLE]),
    ]


def _gain_section(main, figure: Path, root: Path, hyperparameters) -> tuple[dict, list[str]]:
    """Kendall tau of each measure's change against the accuracy gain, and its figure."""
    result = flatness_vs_gain(pairs_from_records(main, hyperparameters))
    shown = flatness_vs_gain_figure(result, figure)
    return result, flatness_vs_gain_lines(result, shown and str(shown.relative_to(root)))


def _mobahi_section(summary) -> tuple[dict[str, Any], list[str]]:
    means = [s["test_accuracy"]["mean"] for s in summary]
    verdict = rise_then_fall(means)
    best = max(range(len(means)), key=lambda i: means[i])
    text = (
        f"Mean test accuracy by generation: {', '.join(f'{100 * m:.2f}' for m in means)} %. "
        f"Peak at generation {best}. "
        + (
            "It rises and then falls, as Mobahi et al. predict."
            if verdict
            else "It does not rise and then fall within these generations."
        )
    )
    return {"means": means, "peak_generation": best, "rise_then_fall": verdict}, [text]


def _ensemble_section(records) -> tuple[dict[str, Any], list[str]]:
    rows = []
    for label in ("teacher", "teacher B", "ensemble of 2 teachers", "gen1", "student of ensemble"):
        group = [r for r in records if r["name"] == label]
        if group:
            rows.append(
                {
                    "model": label,
                    "seeds": len(group),
                    **{
                        LABELS[m]: _pm(summarize([r.get(m) for r in group]), m == "test_accuracy")
                        for m in MEASURES
                    },
                }
            )
    table = to_markdown(rows, ["model", "seeds"] + [LABELS[m] for m in MEASURES])
    return {"rows": rows}, [
        "If self-distillation were an implicit ensemble (Allen-Zhu & Li), the student of "
        "one teacher (gen1) would approach the accuracy of the two-teacher ensemble. "
        "The ensemble's Hessian is over both networks' parameters.",
        "",
        table.replace("test accuracy", "test accuracy (%)"),
    ]


def _stopped_section(records) -> tuple[dict[str, Any], list[str]]:
    budgets = sorted({r["teacher_epochs"] for r in records if r.get("teacher_epochs")})
    main = [r for r in records if r["group"] == "main" and r["generation"] in (0, 1)]
    groups = [
        (
            "full",
            [r for r in main if r["generation"] == 0],
            [r for r in main if r["generation"] == 1],
        )
    ]
    for e in budgets:
        rs = [r for r in records if r.get("teacher_epochs") == e]
        groups.append(
            (
                str(e),
                [r for r in rs if r["role"] == "teacher"],
                [r for r in rs if r["role"] == "student"],
            )
        )
    rows = []
    for budget, teachers, students in groups:
        by_seed = {t["seed"]: t for t in teachers}
        gains = [
            s["test_accuracy"] - by_seed[s["seed"]]["test_accuracy"]
            for s in students
            if s["seed"] in by_seed
        ]
        rows.append(
            {
                "teacher epochs": budget,
                "teacher acc (%)": _pm(summarize([t["test_accuracy"] for t in teachers]), True),
                "student acc (%)": _pm(summarize([s["test_accuracy"] for s in students]), True),
                "gain (points)": _pm(
                    {
                        k: (v * 100 if isinstance(v, float) else v)
                        for k, v in summarize(gains).items()
                    }
                ),
                "student wins": f"{sum(g > 0 for g in gains)}/{len(gains)}",
            }
        )
    return {"rows": rows}, [to_markdown(rows, list(rows[0]))]


def regime_section(records, variants) -> list[str]:
    """One table over regimes x (teacher, gen1, gen2...) and a verdict line per regime."""
    measures = measures_of(records)
    rows, verdicts = [], []
    for name in variants:
        main = [r for r in records if r["variant"] == name and r["group"] == "main"]
        for s in by_generation(main, measures):
            label = "teacher" if s["generation"] == 0 else f"gen{s['generation']}"
            rows.append({"regime": name, "model": label, **_summary_row(s, measures)})
        claims = claims_table([r for r in main if r["generation"] in (0, 1)])
        held = [f"{c['measure']} {claim_cell(c)}" for c in claims]
        verdicts.append(f"- **{name}**, gen1 beats teacher in: " + "; ".join(held))
    columns = ["regime", "model"] + [LABELS[m] for m in measures]
    return [
        "Mean ± std over seeds. λ1, trace, GGN λ1 and sharpness on the first training "
        "examples; matched λ1 at the highest train loss of each seed's teacher and "
        "students (temperature-scaled logits).",
        "",
        to_markdown(rows, columns).replace("test accuracy", "test accuracy (%)"),
        *verdicts,
    ]


def _plane_section(by_seed, figures: Path, root: Path, dataset: str):
    """Each seed's models on their plane (raw weights: each point is the model itself)."""
    from cli.study.planes import plane_lines

    text = [
        "Origin at the teacher, x towards gen1, y towards gen2 made orthogonal (Gram-Schmidt, "
        "raw weight-space distance); the loss at each position is the model's own train loss.",
    ]
    for seed, report in sorted(by_seed.items()):
        text += ["", f"Seed {seed}:", "", *plane_lines(report)]
    figure = figures / f"{dataset}_seed0_plane.png"
    if figure.exists():
        text += ["", f"![plane, seed 0]({figure.relative_to(root)})"]
    return {str(seed): report for seed, report in by_seed.items()}, text


def write_report(
    root: Path, experiment, specs, records, trained: int, seconds: float, planes=None
) -> Path:
    """Write report.md, report.json and figures under `root`; return the Markdown path.

    ``planes``: the teacher -> gen1 -> gen2 plane per variant and seed (positions, losses).
    """
    figures = root / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    command = "flatscape " + " ".join(sys.argv[1:]) if sys.argv else "flatscape reproduce"
    lines = [
        f"# flatscape reproduction ({experiment.preset} preset)",
        "",
        f"Command: `{command}`  ",
        f"{len(specs)} models ({trained} trained in this run), {seconds:.0f} s, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}.",
        "",
        f"Curvature and surfaces on the first {experiment.samples} training examples "
        f"(dataset order, no augmentation, eval mode); accuracy on the full test split. "
        f"λ1: top Hessian eigenvalue (Lanczos, tol {experiment.profile.tol}); trace: "
        f"Hutch++ with {experiment.profile.trace_matvecs} HVPs; basin width: mean distance "
        f"along a filter-normalized direction at which the train loss rises by "
        f"{experiment.profile.width_rise} nats. KD: T={experiment.temperature}, "
        f"alpha={experiment.alpha} (alpha weights the KL term). Train loss is shown beside "
        "every sharpness number: the cross-entropy Hessian scales with p(1-p), so a "
        "saturated, near-interpolating model looks flat partly for that reason.",
    ]
    document: dict[str, Any] = {
        "experiment": experiment.to_json(),
        "models": records,
        "datasets": {},
    }
    variants = list(dict.fromkeys(r["variant"] for r in records))
    if len(variants) > 1 and any(r.get("ggn_lambda_1") is not None for r in records):
        lines += ["", "## Regimes", "", *regime_section(records, variants)]
    if len(variants) > 1:
        main = [r for r in records if r["group"] == "main"]
        document["flatness_vs_gain"], text = _gain_section(
            main, figures / "flatness_vs_gain.png", root, ("variant", "generation")
        )
        lines += ["", "## Does flatness explain the gain? (every variant)", "", *text]
    for dataset in variants:
        own = [r for r in records if r["variant"] == dataset]
        main = [r for r in own if r["group"] == "main"]
        summary, table = generation_table(main)
        claims, claim_lines = _claims_section(main)
        entry: dict[str, Any] = {"by_generation": summary, "claims": claims}
        lines += [
            "",
            f"## {dataset}",
            "",
            "### By generation (mean ± std over seeds)",
            "",
            table,
            "### The paper's claims",
            "",
            *claim_lines,
        ]
        entry["pair_measures"], text = pair_section(main, experiment.samples)
        if text:
            lines += ["", "### Teacher and student as a pair", "", *text]
        entry["flatness_vs_gain"], text = _gain_section(
            main, figures / f"{dataset}_flatness_vs_gain.png", root, ("generation",)
        )
        lines += ["", "### Does flatness explain the gain?", "", *text]
        lines_png = figures / f"{dataset}_lines_seed0.png"
        _figure_lines([r for r in main if r["seed"] == 0], lines_png)
        gens_png = figures / f"{dataset}_generations.png"
        _figure_generations(summary, gens_png, f"{dataset}: mean ± std over seeds")
        lines += [
            "",
            f"![1D surfaces]({lines_png.relative_to(root)})",
            f"![by generation]({gens_png.relative_to(root)})",
        ]
        contours = sorted(figures.glob(f"{dataset}_seed0_*_contour.png"))
        if contours:
            lines += ["", "2D filter-normalized contours (seed 0):", ""]
            lines += [f"![{p.stem}]({p.relative_to(root)})" for p in contours]
        if (planes or {}).get(dataset):
            entry["planes"], text = _plane_section(planes[dataset], figures, root, dataset)
            lines += ["", "### The teacher -> gen1 -> gen2 plane", "", *text]
        if len(summary) >= 3:
            entry["mobahi"], text = _mobahi_section(summary)
            lines += ["", "### Accuracy over generations (Mobahi et al.)", "", *text]
        if experiment.ensemble:
            entry["ensemble"], text = _ensemble_section(own)
            lines += ["", "### Ensemble (Allen-Zhu & Li)", "", *text]
        if experiment.stopped_epochs:
            entry["stopped_teachers"], text = _stopped_section(own)
            lines += ["", "### Teachers stopped early", "", *text]
        document["datasets"][dataset] = entry
    lines += [
        "",
        "## Every model",
        "",
        to_markdown(
            records,
            [
                "dataset",
                "seed",
                "name",
                "test_accuracy",
                "train_loss",
                "lambda_1",
                "trace",
                "trace_stderr",
                "surface_width",
            ],
        ),
    ]
    path = root / "report.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    write_text_atomically((root / "report.json"), json.dumps(document, indent=2, default=str))
    return path
