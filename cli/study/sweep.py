"""`flatscape reproduce --preset sweep`: student recipes over data, widths and seeds.

For every regime (clean data, label noise), teacher width and seed one teacher; from it,
one student per recipe (temperature x alpha x epoch budget x learning rate). Every model
is measured on the same examples (test accuracy, lambda_1, Hutch++ trace, and lambda_1 of
teacher and student at a matched train loss), and each student against its teacher as a
pair (:data:`SWEEP_PAIR_KEYS`: barrier raw and aligned, agreement, KL). The recipe with
the highest mean gain is then trained again on fresh seeds, so that its gain is not
selected on the seeds that chose it. A KD run that diverges or ends at chance is kept as collapsed.

Everything is cached under the output folder (checkpoints, one JSON per measurement), so
a killed sweep continues where it stopped; a grid of other settings is refused there.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cli.study.cache import measured
from cli.study.experiment import read_stamp
from cli.study.flatness_gain import (
    flatness_vs_gain,
    flatness_vs_gain_figure,
    flatness_vs_gain_lines,
    sweep_pairs,
)
from cli.study.student_pairs import measure_pair
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.data import load_dataset
from distill.errors import DistillInputError
from distill.losses import KDConfig
from distill.sources import first_examples
from distill.trainer import (
    TEACHER_RECIPES,
    Recipe,
    student_recipe,
    train_student,
    train_teacher,
)
from landscape.atomic_files import save_figure, write_text_atomically
from landscape.compare.paired_test import paired_test
from landscape.compare.profile import ProfileSettings, matched_lambda_1, profile_model

LR_MODES = ("teacher", "quarter")
"""Student learning rate: the teacher's, or a quarter of it; both with a 2-epoch warm-up."""
FRESH_SEED_BASE = 100
CHANCE_MARGIN = 1.5
"""A student whose test accuracy is below this many times chance has collapsed."""


@dataclass(frozen=True)
class SweepGrid:
    """The sweep's grid; every field can be set from a JSON file (``--grid``).

    Attributes:
        regimes: Name to ``load_dataset`` options (``{"label_noise": 0.2}``).
        widths: cnn1d widths of the teacher (and its students).
        temperatures, alphas: KD settings of the students (alpha weights the KL term).
        epoch_factors: Student epochs as multiples of ``teacher_epochs``.
        lr_modes: ``teacher`` (the teacher's lr) and/or ``quarter`` (a quarter of it).
        seeds: Seeds 0..seeds-1 of the sweep itself.
        fresh_seeds: Seeds the best recipe is trained again on (100, 101, ...; 0: skip).
        teacher_epochs: The teacher's epochs (MNIST-1D's recipe otherwise).
        samples: Train examples every model is measured on.
        trace_matvecs: Hutch++ products of the trace.
    """

    regimes: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"clean": {}, "noise20": {"label_noise": 0.2}}
    )
    widths: tuple[int, ...] = (32, 128)
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    alphas: tuple[float, ...] = (0.5, 1.0)
    epoch_factors: tuple[int, ...] = (1, 2)
    lr_modes: tuple[str, ...] = LR_MODES
    seeds: int = 3
    fresh_seeds: int = 3
    teacher_epochs: int = 20
    samples: int = 512
    trace_matvecs: int = 30

    def __post_init__(self) -> None:
        check_grid_document(json.loads(json.dumps(self.to_json())), "the sweep grid")

    @classmethod
    def from_file(cls, path: str | Path) -> SweepGrid:
        """A grid from a JSON object; fields left out keep the preset's values."""
        try:
            given = json.loads(Path(path).read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise DistillInputError(
                f"--grid {path}: not UTF-8 text; save the JSON as UTF-8"
            ) from None
        except (OSError, ValueError, RecursionError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DistillInputError(f"--grid {path}: not a readable JSON file ({reason})") from None
        return replace(cls(), **check_grid_document(given, f"--grid {path}"))

    def recipes(self) -> list[dict[str, Any]]:
        """Every student recipe of the grid, with its name."""
        rows = []
        for t, a, e, lr in itertools.product(
            self.temperatures, self.alphas, self.epoch_factors, self.lr_modes
        ):
            name = f"T{t:g}-a{a:g}-e{e}x-lr{lr}"
            rows.append({"name": name, "temperature": t, "alpha": a, "epochs": e, "lr": lr})
        return rows

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, and what a resumed sweep must match."""
        return asdict(self)


GRID_LIMITS: dict[str, tuple[type, float, float]] = {
    "widths": (int, 1, 4096),
    "temperatures": (float, 1e-3, 1e3),
    "alphas": (float, 0.0, 1.0),
    "epoch_factors": (int, 1, 16),
    "seeds": (int, 1, 100),
    "fresh_seeds": (int, 0, 100),
    "teacher_epochs": (int, 1, 1000),
    "samples": (int, 1, 4000),
    "trace_matvecs": (int, 0, 10_000),
}
"""Type and closed range of each number of the grid (a list's entries, or the value)."""
REGIME_LIMITS: dict[str, tuple[type, float, float]] = {
    "label_noise": (float, 0.0, 0.99),
    "train_size": (int, 1, 4000),
    "noise_seed": (int, 0, 2**31 - 1),
    "augment": (bool, 0, 1),
}
"""The ``load_dataset`` options a regime may set, with their types and ranges."""
MAX_REGIMES = 16


def check_grid_document(value: Any, source: str = "--grid") -> dict[str, Any]:
    """Check any JSON value as a sweep grid; return the fields it sets, lists as tuples.

    A grid is an object with some of :class:`SweepGrid`'s keys: ``regimes`` an object of
    at most :data:`MAX_REGIMES` names (letters, digits, ``_``, ``-``) to options of
    :data:`REGIME_LIMITS`; ``lr_modes`` a list of :data:`LR_MODES`; every other key a
    number or a non-empty list of distinct numbers in :data:`GRID_LIMITS`.

    Raises:
        DistillInputError: One line naming ``source``, the key and what it accepts.
    """
    known = sorted(f.name for f in fields(SweepGrid))
    if not isinstance(value, dict):
        raise DistillInputError(
            f"{source}: give a JSON object with some of the keys {', '.join(known)}"
        )
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise DistillInputError(f"{source}: unknown keys {unknown[:5]}; known: {', '.join(known)}")
    checked: dict[str, Any] = {}
    for key, given in value.items():
        if key == "regimes":
            checked[key] = _check_regimes(given, source)
        elif key == "lr_modes":
            checked[key] = _check_list(given, f"{source}: lr_modes", _lr_mode)
        elif key in ("seeds", "fresh_seeds", "teacher_epochs", "samples", "trace_matvecs"):
            checked[key] = _check_number(given, f"{source}: {key}", *GRID_LIMITS[key])
        else:
            limits = GRID_LIMITS[key]
            checked[key] = _check_list(
                given, f"{source}: {key}", lambda v, what, lim=limits: _check_number(v, what, *lim)
            )
    return checked


def _check_number(value: Any, what: str, kind: type, low: float, high: float) -> Any:
    """``value`` if it is a ``kind`` (an int for a float) in ``[low, high]``."""
    shown = _shown(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise DistillInputError(f"{what} {shown}: give true or false")
        return value
    wanted = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        noun = "a whole number" if kind is int else "a number"
        raise DistillInputError(f"{what} {shown}: give {noun} in [{low:g}, {high:g}]")
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise DistillInputError(f"{what} {shown}: must lie in [{low:g}, {high:g}]")
    return kind(value)


def _check_list(value: Any, what: str, check) -> tuple[Any, ...]:
    """A non-empty list of distinct entries, each passed through ``check``."""
    if not isinstance(value, list) or not value:
        raise DistillInputError(f"{what} {_shown(value)}: give a non-empty list")
    entries = tuple(check(v, what) for v in value)
    if len(set(entries)) != len(entries):
        raise DistillInputError(f"{what} {_shown(value)}: give each value once")
    return entries


def _lr_mode(value: Any, what: str) -> str:
    if value not in LR_MODES or not isinstance(value, str):
        raise DistillInputError(f"{what} {_shown(value)}: choose from {', '.join(LR_MODES)}")
    return value


def _check_regimes(value: Any, source: str) -> dict[str, dict[str, Any]]:
    what = f"{source}: regimes"
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_REGIMES:
        raise DistillInputError(
            f"{what}: give an object of 1 to {MAX_REGIMES} names to dataset options, e.g. "
            '{"clean": {}, "noise20": {"label_noise": 0.2}}'
        )
    regimes = {}
    for name, options in value.items():
        if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name)):
            raise DistillInputError(
                f"{what}: name {_shown(name)} names a folder; use letters, digits, _ and -"
            )
        if not isinstance(options, dict) or set(options) - set(REGIME_LIMITS):
            raise DistillInputError(
                f"{what}.{name}: give an object of options among {', '.join(REGIME_LIMITS)}"
            )
        regimes[name] = {
            k: _check_number(v, f"{what}.{name}.{k}", *REGIME_LIMITS[k]) for k, v in options.items()
        }
    return regimes


def _shown(value: Any) -> str:
    """A JSON value for a message: one line, at most 40 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def teacher_recipe(grid: SweepGrid) -> Recipe:
    """MNIST-1D's teacher recipe at the grid's epoch budget."""
    return replace(TEACHER_RECIPES["mnist1d"], epochs=grid.teacher_epochs)


def training_recipe(grid: SweepGrid, recipe: dict[str, Any]) -> Recipe:
    """The optimiser of a grid's student recipe: :func:`distill.trainer.student_recipe`.

    That is the teacher's recipe at ``recipe["epochs"]`` times its epochs, with a 2-epoch
    warm-up, at a quarter of the teacher's lr (``lr: quarter``) or at the teacher's own
    (``lr: teacher``).
    """
    base = teacher_recipe(grid)
    student = student_recipe(replace(base, epochs=base.epochs * recipe["epochs"]))
    return student if recipe["lr"] == "quarter" else replace(student, lr=base.lr)


@dataclass(frozen=True)
class Cell:
    """One teacher of the sweep: regime, width and seed."""

    regime: str
    width: int
    seed: int

    @property
    def folder(self) -> str:
        """The cell's folder under the sweep's output folder."""
        return f"{self.regime}/w{self.width}/seed{self.seed}"


def _bundle(grid: SweepGrid, regime: str):
    return load_dataset("mnist1d", **grid.regimes[regime])


def _train_teacher(path: Path, grid: SweepGrid, cell: Cell, device, factor: int = 1) -> None:
    recipe = teacher_recipe(grid)
    model, meta = train_teacher(_bundle(grid, cell.regime),
                                recipe=replace(recipe, epochs=recipe.epochs * factor),
                                seed=cell.seed, arch_overrides={"width": cell.width},
                                device=device)  # fmt: skip
    save_checkpoint(path, model, meta)


def _control(root: Path, grid: SweepGrid, cell: Cell, factor: int, device) -> dict[str, Any]:
    """The teacher trained on hard labels for ``factor`` times its epochs, measured.

    The same budget as a student of that many epochs, so that a gain from training longer
    is not taken for one from distillation (factor 1 is the teacher itself).
    """
    name = "teacher" if factor == 1 else f"teacher_e{factor}x"
    path = root / cell.folder / f"{name}.safetensors"
    if not path.is_file():
        _train_teacher(path, grid, cell, device, factor)
    return measure_checkpoint(path, grid, cell.regime, device)


def _train_student(path: Path, teacher: Path, grid: SweepGrid, recipe: dict, device) -> dict:
    """Train one student; a diverged run is recorded (``collapsed``) instead of raising."""
    kd = KDConfig(temperature=recipe["temperature"], alpha=recipe["alpha"])
    try:
        model, meta = train_student(teacher, kd, recipe=training_recipe(grid, recipe),
                                    device=device)  # fmt: skip
    except DistillInputError as err:
        if "diverged" not in str(err):
            raise
        return {"collapsed": True, "reason": str(err)}
    save_checkpoint(path, model, meta)
    return {}


def measure_checkpoint(path: Path, grid: SweepGrid, regime: str, device="cpu") -> dict[str, Any]:
    """Accuracy, train loss, lambda_1 and trace of one checkpoint of the sweep (cached).

    Cached by :func:`cli.study.cache.measured`: the checkpoint's hash and the settings.
    """
    settings = {"dataset": "mnist1d", "regime": grid.regimes[regime], "samples": grid.samples,
                "top_k": 1, "trace_matvecs": grid.trace_matvecs, "line_points": 0,
                "test": "full test split"}  # fmt: skip

    def measure() -> dict[str, Any]:
        model, _ = load_checkpoint(path, device=device)
        bundle = _bundle(grid, regime)
        train = first_examples(bundle.train_eval, grid.samples, grid.samples, device)
        test = first_examples(bundle.test, None, 1024, device)
        profile = ProfileSettings(top_k=1, trace_matvecs=grid.trace_matvecs, line_points=0)
        record = profile_model(model, F.cross_entropy, train, profile, test_batches=test)
        return {k: record[k] for k in ("train_loss", "test_accuracy", "lambda_1", "trace")}

    return measured(path, "sweep_profile", settings, measure).values


def matched_curvature(
    path: Path, grid: SweepGrid, regime: str, target: float, device="cpu"
) -> float | None:
    """lambda_1 of a checkpoint at train loss ``target`` (temperature-matched), cached.

    Cached by :func:`cli.study.cache.measured` under the checkpoint's hash, the target and
    the settings, so a retrained checkpoint is matched again.
    """
    profile = ProfileSettings(top_k=1)
    settings = {"dataset": "mnist1d", "regime": grid.regimes[regime], "samples": grid.samples,
                "target": target, **asdict(profile)}  # fmt: skip

    def measure() -> dict[str, Any]:
        model, _ = load_checkpoint(path, device=device)
        train = first_examples(_bundle(grid, regime).train_eval, grid.samples, grid.samples,
                               device)  # fmt: skip
        return matched_lambda_1(model, train, target, profile)

    return measured(path, "matched_lambda_1", settings, measure).values["matched_lambda_1"]


SWEEP_PAIR_KEYS = (
    "barrier", "barrier_test", "aligned_barrier", "aligned_barrier_test", "agreement",
    "agreement_test", "kl", "kl_test",
)  # fmt: skip
"""The pair measures of each student against its teacher kept in a sweep row
(:func:`cli.study.student_pairs.measure_pair`, cached beside the student)."""


def _student_row(root: Path, grid: SweepGrid, cell: Cell, recipe: dict, device) -> dict:
    """Train (if needed) and measure one student of ``cell``; its gains over the teacher."""
    teacher = root / cell.folder / "teacher.safetensors"
    path = root / cell.folder / f"{recipe['name']}.safetensors"
    failed = path.with_suffix(".collapsed.json")
    outcome: dict[str, Any] = {}
    if not path.is_file() and not failed.is_file():
        outcome = _train_student(path, teacher, grid, recipe, device)
        if outcome:
            write_text_atomically(failed, json.dumps(outcome))
    elif failed.is_file():
        outcome = json.loads(failed.read_text())
    base = measure_checkpoint(teacher, grid, cell.regime, device)
    row = {**asdict(cell), "recipe": recipe["name"], "teacher": base}
    if outcome.get("collapsed"):
        return {**row, "collapsed": True, "reason": outcome["reason"], "gain": None}
    student = measure_checkpoint(path, grid, cell.regime, device)
    classes = 10
    target = max(base["train_loss"], student["train_loss"])
    control = _control(root, grid, cell, recipe["epochs"], device)
    row.update(
        student=student,
        collapsed=student["test_accuracy"] < CHANCE_MARGIN / classes,
        gain=student["test_accuracy"] - base["test_accuracy"],
        budget_gain=student["test_accuracy"] - control["test_accuracy"],
        control_accuracy=control["test_accuracy"],
        lambda_1_ratio=student["lambda_1"] / base["lambda_1"],
        trace_ratio=student["trace"] / base["trace"],
        matched_target=target,
        matched_lambda_1=matched_curvature(path, grid, cell.regime, target, device),
        teacher_matched_lambda_1=matched_curvature(teacher, grid, cell.regime, target, device),
    )
    pair = measure_pair(path, teacher, grid.samples, device)
    row.update({key: pair.get(key) for key in SWEEP_PAIR_KEYS})
    return row


@dataclass(frozen=True)
class Rates:
    """Seconds of one training epoch, one measurement and one matched lambda_1 of a width."""

    epoch: float
    measure: float
    matched: float


def calibrate(grid: SweepGrid, device="cpu") -> dict[int, Rates]:
    """Time, on this machine, what the sweep repeats, for each width (for the estimate).

    A throwaway teacher trains 2 epochs (the second is timed: no first-call costs), then
    is measured as every model is, and matched once at 1.5 times its train loss.
    """
    bundle = _bundle(grid, next(iter(grid.regimes)))
    two = replace(teacher_recipe(grid), epochs=2)
    settings = ProfileSettings(top_k=1, trace_matvecs=grid.trace_matvecs, line_points=0)
    rates = {}
    for width in grid.widths:
        records: list[dict[str, Any]] = []
        model, _ = train_teacher(bundle, recipe=two, seed=0, arch_overrides={"width": width},
                                 device=device, log=records.append)  # fmt: skip
        train = first_examples(bundle.train_eval, grid.samples, grid.samples, device)
        start = time.perf_counter()
        record = profile_model(model, F.cross_entropy, train, settings)
        measured = time.perf_counter() - start
        start = time.perf_counter()
        matched_lambda_1(model, train, 1.5 * record["train_loss"], ProfileSettings(top_k=1))
        rates[width] = Rates(records[-1]["seconds"], measured, time.perf_counter() - start)
    return rates


def estimate(grid: SweepGrid, rates: dict[int, Rates]) -> tuple[int, float]:
    """Models and seconds of the whole sweep: training, measuring, matching.

    Each model is measured once; each student is matched twice (itself and its teacher).
    Fresh seeds are counted with a teacher, an equal-budget teacher and a student of the
    mean epoch budget.
    """
    recipes = grid.recipes()
    student_epochs = sum(grid.teacher_epochs * r["epochs"] for r in recipes)
    mean_factor = student_epochs / len(recipes) / grid.teacher_epochs
    models = seconds = 0.0
    for width in grid.widths:
        rate = rates[width]
        cells = len(grid.regimes) * grid.seeds
        fresh = len(grid.regimes) * grid.fresh_seeds
        longer = [f for f in grid.epoch_factors if f > 1]  # equal-budget teachers
        epochs = cells * (grid.teacher_epochs * (1 + sum(longer)) + student_epochs)
        epochs += fresh * grid.teacher_epochs * (1 + 2 * mean_factor)
        count = cells * (1 + len(recipes) + len(longer)) + 3 * fresh
        students = cells * len(recipes) + fresh
        models += count
        seconds += rate.epoch * epochs + rate.measure * count + 2 * rate.matched * students
    return int(models), seconds


def run_sweep(grid: SweepGrid, out_dir: str | Path, quiet: bool = False, device="cpu") -> Path:
    """Train and measure the sweep (resuming), write its report; return report.md's path."""
    from cli._common import progress_bar

    root = Path(out_dir)
    _check_grid(root, grid)
    start = time.perf_counter()
    rates = calibrate(grid, device)
    models, seconds = estimate(grid, rates)
    shown = "; ".join(f"width {w}: epoch {r.epoch:.2f} s, measurement {r.measure:.1f} s, "
                      f"matched λ1 {r.matched:.1f} s" for w, r in rates.items())  # fmt: skip
    print(f"sweep: {models} models; about {seconds / 60:.0f} min on this machine if none is "
          f"cached ({shown})", file=sys.stderr, flush=True)  # fmt: skip
    cells = [Cell(r, w, s) for r in grid.regimes for w in grid.widths for s in range(grid.seeds)]
    recipes = grid.recipes()
    rows = []
    with progress_bar(len(cells) * (1 + len(recipes)), "sweep", quiet, unit="model") as bar:
        for cell in cells:
            _ensure_teacher(root, grid, cell, device)
            bar.update(1)
            for recipe in recipes:
                rows.append(_student_row(root, grid, cell, recipe, device))
                bar.update(1)
    best = best_recipe(rows, recipes)
    fresh = []
    if best is not None and grid.fresh_seeds:
        recipe = next(r for r in recipes if r["name"] == best)
        for regime, width in itertools.product(grid.regimes, grid.widths):
            for seed in range(FRESH_SEED_BASE, FRESH_SEED_BASE + grid.fresh_seeds):
                cell = Cell(regime, width, seed)
                _ensure_teacher(root, grid, cell, device)
                fresh.append(_student_row(root, grid, cell, recipe, device))
    return write_sweep_report(root, grid, rows, fresh, best, time.perf_counter() - start,
                              seconds)  # fmt: skip


def _ensure_teacher(root: Path, grid: SweepGrid, cell: Cell, device) -> None:
    path = root / cell.folder / "teacher.safetensors"
    if not path.is_file():
        _train_teacher(path, grid, cell, device)


def _check_grid(root: Path, grid: SweepGrid) -> None:
    stamp = root / "sweep.json"
    document = json.loads(json.dumps(grid.to_json()))
    if stamp.is_file():
        if read_stamp(stamp) != document:
            raise DistillInputError(
                f"{root} holds a sweep with another grid ({stamp}); use another --out-dir"
            )
        return  # the same grid: the stamp stays as it is (it may be the --grid file itself)
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomically(stamp, json.dumps(document, indent=2))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Gain and flatness ratios of one recipe in one (regime, width) over its seeds."""
    done = [r for r in rows if not r["collapsed"]]
    gains = [r["gain"] for r in done]

    def stats(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return {"mean": None, "std": None, "n": 0}
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))
                if len(values) > 1 else 0.0, "n": len(values)}  # fmt: skip

    teacher_acc = float(np.mean([r["teacher"]["test_accuracy"] for r in rows]))
    budget = [r["budget_gain"] for r in done]
    student = [r["student"]["test_accuracy"] for r in done]
    return {
        "gain": stats(gains),
        "wins": sum(g > 0 for g in gains),
        "gain_test": asdict(paired_test(student, [r["teacher"]["test_accuracy"] for r in done])),
        "budget_gain": stats(budget),
        "budget_wins": sum(g > 0 for g in budget),
        "budget_gain_test": asdict(paired_test(student, [r["control_accuracy"] for r in done])),
        "seeds": len(rows),
        "collapsed": len(rows) - len(done),
        "teacher_accuracy": teacher_acc,
        "lambda_1_ratio": stats([r["lambda_1_ratio"] for r in done]),
        "trace_ratio": stats([r["trace_ratio"] for r in done]),
        "matched_lambda_1_ratio": stats(
            [
                r["matched_lambda_1"] / r["teacher_matched_lambda_1"]
                for r in done
                if r.get("matched_lambda_1") and r.get("teacher_matched_lambda_1")
            ]
        ),  # fmt: skip
    }


def best_recipe(rows: list[dict[str, Any]], recipes: list[dict[str, Any]]) -> str | None:
    """The recipe with the highest mean gain over every cell (collapsed runs count as -1)."""
    means = {}
    for recipe in recipes:
        gains = [r["gain"] if not r["collapsed"] else -1.0
                 for r in rows if r["recipe"] == recipe["name"]]  # fmt: skip
        if gains:
            means[recipe["name"]] = float(np.mean(gains))
    return max(means, key=means.get) if means else None


def noise_floor(accuracy: float, test_examples: int) -> float:
    """Two standard errors of the difference of two accuracies near ``accuracy`` on one test set.

    Treating the two models' errors as independent: sqrt(2 p (1 - p) / n); a gain below
    twice that is within the test set's binomial noise.
    """
    return 2 * math.sqrt(2 * accuracy * (1 - accuracy) / test_examples)


def write_sweep_report(
    root: Path, grid: SweepGrid, rows, fresh, best, seconds: float, estimated: float
) -> Path:
    """report.md, report.json and the gain-vs-lambda_1 figure of a sweep."""
    from landscape.compare.table import to_markdown

    test_examples = len(load_dataset("mnist1d").test)
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        groups.setdefault((row["regime"], row["width"]), {}).setdefault(row["recipe"], []).append(
            row
        )
    command = "flatscape " + " ".join(sys.argv[1:]) if sys.argv else "flatscape reproduce"
    lines = [
        "# flatscape recipe sweep",
        "",
        f"Command: `{command}`  ",
        f"{len(rows) + len(fresh)} students, {seconds / 60:.1f} min (estimated beforehand: "
        f"{estimated / 60:.0f} min), torch {torch.__version__}, {torch.get_num_threads()} "
        "threads.",
        "",
        f"MNIST-1D, cnn1d teachers of widths {', '.join(map(str, grid.widths))} trained "
        f"{grid.teacher_epochs} epochs (SGD lr 0.1, cosine); each student a fresh init of the "
        "teacher's architecture trained on its soft outputs. Gain = student test accuracy "
        "minus its own teacher's (same seed), in points; vs equal budget: minus the teacher "
        "trained on hard labels for the student's number of epochs (same seed), so that "
        "training longer is not taken for distillation; wins = seeds with a positive gain "
        f"(with {grid.seeds} seeds and no effect, all win with probability "
        f"{0.5**grid.seeds:.3f}); gain test and budget test: the paired t-test of student "
        "against teacher (or the equal-budget teacher) accuracy over seeds, d_z the mean "
        "difference over its standard deviation, p two-sided (report.json also holds the "
        f"Wilcoxon signed-rank p); ratios are student / teacher on the first "
        f"{grid.samples} train examples; matched λ1: both at the higher of their two train "
        "losses (temperature-matched). A gain below the noise floor (two standard errors of "
        f"a difference of two accuracies on {test_examples} test examples) is noise.",
    ]
    summaries: dict[str, dict[str, Any]] = {}
    for (regime, width), by_recipe in groups.items():
        table, teachers = [], []
        for name, recipe_rows in by_recipe.items():
            s = summarise(recipe_rows)
            teachers.append(s["teacher_accuracy"])
            summaries[f"{regime}/w{width}/{name}"] = s
            table.append({
                "recipe": name, "gain (pts)": _pm(s["gain"], 100),
                "wins": f"{s['wins']}/{s['seeds']}",
                "vs equal budget (pts)": _pm(s["budget_gain"], 100),
                "budget wins": f"{s['budget_wins']}/{s['seeds']}",
                "collapsed": s["collapsed"], "λ1 ratio": _pm(s["lambda_1_ratio"], signed=False),
                "trace ratio": _pm(s["trace_ratio"], signed=False),
                "matched λ1 ratio": _pm(s["matched_lambda_1_ratio"], signed=False),
                "gain test": _test(s["gain_test"]),
                "budget test": _test(s["budget_gain_test"]),
            })  # fmt: skip
        teacher = float(np.mean(teachers))
        floor = noise_floor(teacher, test_examples)
        lines += ["", f"## {regime}, width {width}", "",
                  f"Teacher test accuracy {100 * teacher:.2f} % (mean over seeds); noise floor "
                  f"of a gain: {100 * floor:.2f} points.", "",
                  to_markdown(table, list(table[0]))]  # fmt: skip
    verdict, fresh_summary = _verdict(fresh, best, test_examples)
    lines += ["", "## Best recipe on fresh seeds", "", *verdict]
    figure = root / "gain_vs_lambda_1.png"
    _figure(summaries, figure)
    lines += ["", f"![gain vs λ1 ratio]({figure.name})"]
    correlation = flatness_vs_gain(sweep_pairs(rows, grid.recipes()))
    shown = flatness_vs_gain_figure(correlation, root / "flatness_vs_gain.png")
    lines += ["", "## Does flatness explain the gain?", "",
              *flatness_vs_gain_lines(correlation, shown and shown.name)]  # fmt: skip
    path = root / "report.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    document = {"grid": grid.to_json(), "students": rows, "summaries": summaries,
                "best": best, "fresh": fresh, "fresh_summary": fresh_summary,
                "flatness_vs_gain": correlation, "seconds": seconds,
                "estimated_seconds": estimated}  # fmt: skip
    write_text_atomically((root / "report.json"), json.dumps(document, indent=2, default=str))
    return path


def _test(test: dict[str, Any]) -> str:
    """A paired test in one cell: ``d_z +1.2, p 0.04`` (``—`` when undefined)."""
    if test["t_p_value"] is None:
        return "—"
    return f"d_z {test['effect_size']:+.2g}, p {test['t_p_value']:.2g}"


def _pm(summary: dict[str, Any], scale: float = 1.0, signed: bool = True) -> str:
    if summary["mean"] is None:
        return "—"
    sign = "+" if signed else ""
    return f"{scale * summary['mean']:{sign}.3g} ± {scale * summary['std']:.2g}"


def _verdict(fresh, best, test_examples: int) -> tuple[list[str], dict[str, Any]]:
    if best is None:
        return ["No recipe finished."], {}
    if not fresh:
        return [f"Best recipe on the sweep's seeds: {best}; no fresh seeds were run."], {}
    by_cell: dict[str, Any] = {}
    count = len({r["seed"] for r in fresh})
    lines = [f"Best recipe on the sweep's seeds (highest mean gain over every cell): "
             f"**{best}**, trained again on {count} fresh seeds:", ""]  # fmt: skip
    for key in dict.fromkeys((r["regime"], r["width"]) for r in fresh):
        rows = [r for r in fresh if (r["regime"], r["width"]) == key]
        s = summarise(rows)
        floor = noise_floor(s["teacher_accuracy"], test_examples)
        mean, budget = s["gain"]["mean"], s["budget_gain"]["mean"]
        beyond = mean is not None and mean > floor and s["wins"] == len(rows)
        budget_beyond = budget is not None and budget > floor and s["budget_wins"] == len(rows)
        by_cell[f"{key[0]}/w{key[1]}"] = {**s, "noise_floor": floor, "beyond_noise": beyond,
                                          "budget_beyond_noise": budget_beyond}  # fmt: skip
        lines.append(
            f"- {key[0]}, width {key[1]}: gain {_pm(s['gain'], 100)} points, wins "
            f"{s['wins']}/{len(rows)} (paired t: {_test(s['gain_test'])}), collapsed "
            f"{s['collapsed']}, noise floor "
            f"{100 * floor:.2f}: {'beyond noise' if beyond else 'within noise or negative'}; "
            f"against the equal-budget teacher {_pm(s['budget_gain'], 100)} points, wins "
            f"{s['budget_wins']}/{len(rows)} ({_test(s['budget_gain_test'])}): "
            f"{'beyond noise' if budget_beyond else 'within noise or negative'}; "
            f"λ1 ratio {_pm(s['lambda_1_ratio'], signed=False)}, matched λ1 ratio "
            f"{_pm(s['matched_lambda_1_ratio'], signed=False)}."
        )
    return lines, by_cell


def _figure(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """Mean gain against the mean lambda_1 ratio, one point per recipe and cell."""
    import matplotlib
    from matplotlib.figure import Figure

    from landscape.surface.plot import COLORS, STYLE

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.2, 3.0), layout="constrained")
        ax = fig.subplots()
        cells = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in summaries))
        for n, cell in enumerate(cells):
            points = [(s["lambda_1_ratio"]["mean"], 100 * s["gain"]["mean"])
                      for key, s in summaries.items() if key.startswith(cell + "/")
                      and s["gain"]["mean"] is not None]  # fmt: skip
            if points:
                xs, ys = zip(*points, strict=True)
                ax.scatter(xs, ys, s=10, color=COLORS[n % len(COLORS)], label=cell)
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(1, color="black", lw=0.6, ls=":")
        ax.set(xlabel="λ1 ratio (student / teacher)", ylabel="gain in test accuracy (points)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        save_figure(fig, path)
