"""Does flatness explain the gain? Kendall's tau of each measure's change against the gain.

Over teacher-student pairs (a sweep's students, a reproduction's generations, any
compared set), each measure's *change* is set against the student's *gain*:

- gain: the student's test accuracy minus its teacher's (same seed), in accuracy units;
- change of a model's own measure (λ1, trace, basin width, GGN λ1, adaptive sharpness,
  matched λ1): the ratio student / teacher, defined where the teacher's value is
  positive (ratios compare cells whose teachers differ in scale; tau, a rank
  correlation, is the same for the log-ratio);
- a measure of the pair itself (barrier, aligned barrier, curve maximum, agreement, KL,
  from ``compare --connectivity``): its value, as measured between the two.

Per measure: Kendall's tau-b over the pairs with its bootstrap interval (resampling
teachers, since students of one teacher are not independent) and, where the runs vary
hyper-parameters, Jiang et al.'s granulated tau (seed held fixed within each group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from landscape.atomic_files import save_figure
from landscape.compare.rank_correlation import granulated_tau, tau_with_interval
from landscape.compare.table import Record, to_markdown

RATIO_MEASURES = (
    "lambda_1", "trace", "surface_width", "ggn_lambda_1", "avg_sharpness",
    "worst_sharpness", "matched_lambda_1",
)  # fmt: skip
"""A model's own measures: their change is the ratio student / teacher."""
PAIR_MEASURES = ("barrier", "aligned_barrier", "curve_max_loss", "agreement", "kl")
"""Measures of the pair itself (``compare --connectivity``): taken as they are."""
LABELS = {
    "lambda_1": "λ1", "trace": "trace", "surface_width": "basin width",
    "ggn_lambda_1": "GGN λ1", "avg_sharpness": "avg adaptive sharpness",
    "worst_sharpness": "worst adaptive sharpness", "matched_lambda_1": "matched λ1",
    "barrier": "barrier", "aligned_barrier": "aligned barrier",
    "curve_max_loss": "curve max loss", "agreement": "agreement", "kl": "KL(T||S)",
}  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """A student and its teacher, measured on the same data.

    Attributes:
        teacher, student: Records (``test_accuracy`` and the measures; the student's
            record also holds the pair's own measures, e.g. ``barrier``).
        settings: The run's hyper-parameters (name to value), for granulated tau.
        cluster: The teacher's identity: the bootstrap resamples teachers.
        seed: The seed, held fixed within a granulated-tau group.
    """

    teacher: Record
    student: Record
    settings: dict[str, Any] = field(default_factory=dict)
    cluster: str = ""
    seed: Any = None


def change(pair: Pair, measure: str) -> float | None:
    """The pair's change in ``measure``: ratio student / teacher, or the pair's value."""
    value = pair.student.get(measure)
    if measure in PAIR_MEASURES or value is None:
        return value
    reference = pair.teacher.get(measure)
    if reference is None or not reference > 0:
        return None
    return value / reference


def gain(pair: Pair) -> float | None:
    """Student test accuracy minus its teacher's."""
    student, teacher = pair.student.get("test_accuracy"), pair.teacher.get("test_accuracy")
    return None if student is None or teacher is None else student - teacher


def pairs_from_records(
    records: Sequence[Record], hyperparameters: Sequence[str] = ("generation",)
) -> list[Pair]:
    """Each student (generation > 0) with the generation-0 record of its seed and variant.

    Works on ``reproduce``'s ``models`` and on ``compare``'s rows; ``hyperparameters``
    name the record columns that are the design's hyper-parameters.
    """
    teachers = {(r.get("variant"), r.get("seed")): r for r in records if r.get("generation") == 0}
    pairs = []
    for r in records:
        key = (r.get("variant"), r.get("seed"))
        if (r.get("generation") or 0) > 0 and key in teachers:
            pairs.append(Pair(teachers[key], r, {h: r.get(h) for h in hyperparameters},
                              f"{key[0]}/seed{key[1]}", r.get("seed")))  # fmt: skip
    return pairs


def sweep_pairs(rows: Sequence[Record], recipes: Sequence[Record]) -> list[Pair]:
    """The sweep's students that did not collapse, with their recipe's settings."""
    by_name = {r["name"]: r for r in recipes}
    pairs = []
    for row in rows:
        if row["collapsed"]:
            continue
        recipe = by_name[row["recipe"]]
        settings = {"regime": row["regime"], "width": row["width"],
                    **{k: recipe[k] for k in ("temperature", "alpha", "epochs", "lr")}}  # fmt: skip
        teacher = {**row["teacher"], "matched_lambda_1": row.get("teacher_matched_lambda_1")}
        extra = {m: row[m] for m in PAIR_MEASURES if m in row}
        student = {**row["student"], "matched_lambda_1": row.get("matched_lambda_1"), **extra}
        cluster = f"{row['regime']}/w{row['width']}/seed{row['seed']}"
        pairs.append(Pair(teacher, student, settings, cluster, row["seed"]))
    return pairs


@dataclass(frozen=True)
class GainSettings:
    """How the tau table is computed.

    Attributes:
        resamples: Bootstrap resamples of the teachers.
        confidence: The interval's coverage.
        seed: Seed of the bootstrap.
    """

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


def flatness_vs_gain(pairs: Sequence[Pair], settings: GainSettings | None = None) -> Record:
    """Kendall tau of each measured change against the gain, with interval and granulated tau.

    Returns:
        ``{"rows": [...], "pairs", "teachers", "hyperparameters" (those that vary),
        "settings"}``; one row per measure with a change in some pair: ``measure``,
        ``change`` (``ratio`` or ``pair``), the fields of
        :class:`~landscape.compare.rank_correlation.TauResult` (``n``, ``tau``,
        ``p_value``, ``ci_low``, ``ci_high``, ``confidence``, ``resamples``, ``note``),
        ``granulated_tau`` and ``granulated`` (per hyper-parameter ``{"tau", "groups"}``).
    """
    settings = settings or GainSettings()
    names = sorted(h for h in {h for p in pairs for h in p.settings}
                   if len({repr(p.settings.get(h)) for p in pairs}) > 1)  # fmt: skip
    table = [{**p.settings, "seed": p.seed, "gain": gain(p),
              **{m: change(p, m) for m in RATIO_MEASURES + PAIR_MEASURES}}
             for p in pairs]  # fmt: skip
    rows = []
    for measure in RATIO_MEASURES + PAIR_MEASURES:
        values = [t[measure] for t in table]
        if all(v is None for v in values):
            continue
        tau = tau_with_interval(values, [t["gain"] for t in table], [p.cluster for p in pairs],
                                settings.resamples, settings.confidence, settings.seed)  # fmt: skip
        granulated = granulated_tau(table, measure, "gain", names, fixed=("seed",))
        rows.append({"measure": measure,
                     "change": "pair" if measure in PAIR_MEASURES else "ratio",
                     **asdict(tau), "granulated_tau": granulated.value,
                     "granulated": granulated.per_hyperparameter})  # fmt: skip
    return {"rows": rows, "pairs": len(pairs), "teachers": len({p.cluster for p in pairs}),
            "hyperparameters": names, "settings": asdict(settings)}  # fmt: skip


def flatness_vs_gain_lines(result: Record, figure: str | None = None) -> list[str]:
    """The tau table as Markdown lines, with what it means and the figure's link."""
    if not result["rows"]:
        return ["No measure was set against a gain (no complete teacher-student pair)."]
    confidence = result["settings"]["confidence"]
    varied = ", ".join(result["hyperparameters"]) or "none"
    lines = [
        f"Kendall's tau-b between each measure's change (ratio student / teacher; a "
        f"pair's barrier or agreement as measured) and the test-accuracy gain (student "
        f"minus its teacher), over {result['pairs']} students of {result['teachers']} "
        f"teachers. CI: {100 * confidence:g} % percentile bootstrap over teachers "
        f"({result['settings']['resamples']} resamples, seed {result['settings']['seed']}). "
        f"Granulated tau (Jiang et al. 2019): the mean over the varied hyper-parameters "
        f"({varied}) of the mean tau within groups where only that one varies (seed held "
        "fixed). A negative tau for λ1 means flatter students gained more. p: scipy's test "
        "of tau = 0, which takes the students as independent (students of one teacher are "
        "not); the interval does not.",
        *_coarse_warning(result["teachers"]),
        "",
        to_markdown(
            [_shown(r) for r in result["rows"]],
            ["measure", "tau", "CI", "n", "granulated tau", "p"],
        ),
    ]
    if figure:
        lines += ["", f"![Kendall tau of each measure's change against the gain]({figure})"]
    return lines


FEW_TEACHERS = 10
"""Below this many teachers the bootstrap over teachers has too few distinct resamples."""


def _coarse_warning(teachers: int) -> list[str]:
    if teachers >= FEW_TEACHERS:
        return []
    return ["", f"With {teachers} teachers the bootstrap has few distinct resamples: the "
            "interval is coarse (it may end at tau itself) and wide; more seeds or cells "
            "narrow it."]  # fmt: skip


def _shown(row: Record) -> Record:
    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:+.2f}"

    ci = "—" if row["ci_low"] is None else f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    tau = number(row["tau"]) if row["note"] is None else f"— ({row['note']})"
    return {"measure": LABELS.get(row["measure"], row["measure"]), "tau": tau, "CI": ci,
            "n": row["n"], "granulated tau": number(row["granulated_tau"]),
            "p": "—" if row["p_value"] is None else f"{row['p_value']:.2g}"}  # fmt: skip


def flatness_vs_gain_figure(result: Record, path: Path, title: str = "") -> Path | None:
    """Tau with its interval per measure (and the granulated tau); None if no row has tau."""
    import matplotlib
    from matplotlib.figure import Figure

    from landscape.surface.plot import COLORS, STYLE

    rows = [r for r in result["rows"] if r["tau"] is not None]
    if not rows:
        return None
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.2, 0.45 * len(rows) + 1.0), layout="constrained")
        ax = fig.subplots()
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows, strict=True):
            if r["ci_low"] is not None:
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=COLORS[0], lw=1.5)
            ax.plot(r["tau"], y, "o", color=COLORS[0], label="tau, bootstrap CI" if y == ys[0]
                    else None)  # fmt: skip
            if r["granulated_tau"] is not None:
                ax.plot(r["granulated_tau"], y, "D", mfc="none", color=COLORS[1],
                        label="granulated tau" if y == ys[0] else None)  # fmt: skip
        ax.axvline(0, color="black", lw=0.6)
        names = [LABELS.get(r["measure"], r["measure"]) for r in rows]
        title = title or f"{result['pairs']} students of {result['teachers']} teachers"
        ax.set(xlim=(-1.05, 1.05), yticks=ys, yticklabels=names, title=title,
               xlabel="Kendall tau (change vs accuracy gain)")  # fmt: skip
        ax.legend(fontsize=6, loc="best")
        save_figure(fig, path)
    return path
