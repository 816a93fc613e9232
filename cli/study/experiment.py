"""The experiments behind `flatscape reproduce`: which models to train, measure and report.

An `Experiment` names datasets, seeds and generations. `run_experiment` walks it: for
each dataset and seed, a teacher and its self-distilled generations (and, in the full
preset, an ensemble experiment and teachers stopped early), each trained only if its
checkpoint is not already in the output folder and measured only if its profile is
not cached beside it; each student of the main group is also measured as a pair with
its seed's teacher (:mod:`cli.study.student_pairs`, cached likewise). Then it writes the
report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cli.study.cache import measured
from cli.study.report import write_report
from cli.study.student_pairs import add_pair_measures
from distill.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from distill.data import dataset_from_description, load_dataset
from distill.errors import DistillInputError
from distill.losses import KDConfig
from distill.sources import first_examples
from distill.trainer import (
    TEACHER_RECIPES,
    LogitEnsemble,
    json_lines_log,
    recipe_for_student,
    student_recipe,
    train_student,
    train_teacher,
)
from landscape.atomic_files import write_text_atomically
from landscape.compare.profile import ProfileSettings, matched_lambda_1, profile_model
from landscape.surface.directions import random_direction
from landscape.surface.evaluate import SurfaceEvaluator, compute_surface, grid_points
from landscape.surface.plot import plot_surfaces
from landscape.surface.store import SurfaceSpec, SurfaceStore

SECOND_TEACHER_SEED = 1000


@dataclass(frozen=True)
class Experiment:
    """What `reproduce` trains and measures.

    Attributes:
        datasets: Dataset names.
        seeds: Seeds 0..seeds-1; each has its own teacher and students.
        generations: Self-distilled generations after the teacher.
        epochs: Training epochs of every model (None: the dataset's default recipe).
        temperature, alpha: KD settings (alpha weights the KL term; 1 = pure).
        samples: Train examples the curvature and surfaces are measured on.
        profile: Curvature and 1D-surface settings.
        contour_points: Per-axis points of the 2D contour of each model of seed 0.
        ensemble: Also distil from an ensemble of two teachers (multi-view theory).
        stopped_epochs: Also train teachers for these shorter budgets and distil each
            (student gain against teacher accuracy).
        dataset_options: Extra options per dataset (e.g. a larger mnist1d test set).
        regimes: Training regimes, each a set of `load_dataset` options (label noise,
            train size, augmentation); ``clean`` has none.
    """

    preset: str
    datasets: tuple[str, ...]
    seeds: int
    generations: int
    epochs: int | None = None
    temperature: float = 4.0
    alpha: float = 1.0
    samples: int = 1024
    profile: ProfileSettings = field(default_factory=lambda: ProfileSettings(trace_matvecs=60))
    contour_points: int = 11
    ensemble: bool = False
    stopped_epochs: tuple[int, ...] = ()
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    regimes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"clean": {}})

    @classmethod
    def from_preset(cls, name: str, datasets=None, seeds=None, generations=None, epochs=None):
        """A preset of :data:`PRESETS` with the values given (not None) replaced."""
        overrides = {
            "datasets": tuple(datasets) if datasets else None,
            "seeds": seeds,
            "generations": generations,
            "epochs": epochs,
        }
        return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, and what a resumed run must match (``experiment.json``)."""
        return asdict(self)


PRESETS = {
    "quick": Experiment("quick", ("mnist1d",), seeds=3, generations=2),
    "regimes": Experiment(
        "regimes",
        ("mnist1d",),
        seeds=5,
        generations=2,
        epochs=30,
        contour_points=0,
        profile=ProfileSettings(trace_matvecs=30, confounds=True),
        dataset_options={"mnist1d": {"test_size": 4000}},
        regimes={
            "clean": {},
            "noise20": {"label_noise": 0.2},
            "noise40": {"label_noise": 0.4},
            "small": {"train_size": 1000},
            "augment": {"augment": True},
        },
    ),
    "full": Experiment(
        "full",
        ("mnist1d", "digits"),
        seeds=3,
        generations=5,
        contour_points=15,
        ensemble=True,
        stopped_epochs=(5, 15),
        dataset_options={"mnist1d": {"test_size": 4000}},
    ),
}


@dataclass
class ModelSpec:
    """One model of the experiment: where it lives and how to make it."""

    path: Path
    dataset: str
    regime: str
    seed: int
    group: str  # "main", "ensemble" or "stopped"
    role: str
    generation: int
    parents: tuple[Path, ...] = ()
    teacher_epochs: int | None = None
    label: str = ""


def variant(dataset: str, regime: str) -> str:
    """Folder and report name of a dataset in a regime (``mnist1d``, ``mnist1d-noise20``)."""
    return dataset if regime == "clean" else f"{dataset}-{regime}"


def plan(experiment: Experiment, root: Path) -> list[ModelSpec]:
    """Every model of the experiment, parents before children."""
    specs: list[ModelSpec] = []
    for dataset in experiment.datasets:
        for regime in experiment.regimes:
            for seed in range(experiment.seeds):
                specs += _plan_seed(
                    experiment, root / variant(dataset, regime), dataset, regime, seed
                )
    return specs


def _plan_seed(experiment: Experiment, folder: Path, dataset: str, regime: str, seed: int):
    base = folder / f"seed{seed}"

    def spec(path, seed_, group, role, generation, parents=(), epochs=None, label=""):
        return ModelSpec(path, dataset, regime, seed_, group, role, generation, parents,
                         epochs, label)  # fmt: skip

    teacher = spec(base / "teacher.safetensors", seed, "main", "teacher", 0, label="teacher")
    specs = [teacher]
    parent = teacher.path
    for g in range(1, experiment.generations + 1):
        path = base / f"gen{g}.safetensors"
        specs.append(spec(path, seed, "main", "student", g, (parent,), label=f"gen{g}"))
        parent = path
    if experiment.ensemble:
        second = spec(base / "teacher_b.safetensors", SECOND_TEACHER_SEED + seed, "ensemble",
                      "teacher", 0, label="teacher B")  # fmt: skip
        student = spec(base / "ensemble_student.safetensors", seed, "ensemble", "student", 1,
                       (teacher.path, second.path), label="student of ensemble")  # fmt: skip
        specs += [second, student]
    for epochs in experiment.stopped_epochs:
        stopped = base / f"stopped_e{epochs}"
        early = spec(stopped / "teacher.safetensors", seed, "stopped", "teacher", 0,
                     epochs=epochs, label=f"teacher ({epochs} epochs)")  # fmt: skip
        student = spec(stopped / "gen1.safetensors", seed, "stopped", "student", 1,
                       (early.path,), epochs, f"gen1 of {epochs}-epoch teacher")  # fmt: skip
        specs += [early, student]
    return specs


def _bundle(experiment: Experiment, dataset: str, regime: str):
    options = {**experiment.dataset_options.get(dataset, {}), **experiment.regimes[regime]}
    return load_dataset(dataset, **options)


def train_model(spec: ModelSpec, experiment: Experiment, device="cpu") -> None:
    """Train one model of the plan and save its checkpoint (with a JSON-lines log)."""
    log = json_lines_log(spec.path.with_suffix(".log.jsonl"))
    if spec.role == "teacher":
        recipe = TEACHER_RECIPES[spec.dataset]
        epochs = spec.teacher_epochs or experiment.epochs
        if epochs:
            recipe = replace(recipe, epochs=epochs)
        bundle = _bundle(experiment, spec.dataset, spec.regime)
        model, meta = train_teacher(bundle, recipe=recipe, seed=spec.seed, device=device, log=log)
    else:
        kd = KDConfig(experiment.temperature, experiment.alpha)
        _, parent = load_checkpoint(spec.parents[0])
        recipe = recipe_for_student(parent)
        if spec.teacher_epochs is not None:  # a stopped teacher's student trains in full
            recipe = student_recipe(TEACHER_RECIPES[spec.dataset])
        if experiment.epochs:
            recipe = replace(recipe, epochs=experiment.epochs)
        model, meta = train_student(list(spec.parents), kd, recipe=recipe, device=device, log=log)
    save_checkpoint(spec.path, model, meta)


def measure_model(spec: ModelSpec, experiment: Experiment, device="cpu") -> dict[str, Any]:
    """Profile a checkpoint, reusing the cached profile when hash and settings match."""
    settings = {"samples": experiment.samples, **asdict(experiment.profile)}

    def measure() -> dict[str, Any]:
        model, meta = load_checkpoint(spec.path, device=device)
        bundle = dataset_from_description(meta["dataset"])
        train = first_examples(bundle.train_eval, experiment.samples, experiment.samples, device)
        test = first_examples(bundle.test, None, 1024, device)
        record = profile_model(model, F.cross_entropy, train, experiment.profile,
                               test_batches=test)  # fmt: skip
        return {**record, **_identity(spec, meta)}

    return measured(spec.path, "profile", settings, measure).values


def contour(spec: ModelSpec, experiment: Experiment, figures: Path, device="cpu") -> Path:
    """2D filter-normalized surface of one model into ``<checkpoint>.h5`` and a contour PNG.

    Resumes a partial file, so a killed run loses no finished point.
    """
    n = experiment.contour_points
    model, meta = load_checkpoint(spec.path, device=device)
    bundle = dataset_from_description(meta["dataset"])
    batches = first_examples(bundle.train_eval, experiment.samples, 256, device)
    x = y = np.linspace(-1.0, 1.0, n)
    directions = [random_direction(model, torch.Generator().manual_seed(s)) for s in (0, 1)]
    settings = {
        "checkpoint_sha256": file_sha256(spec.path),
        "normalization": "filter",
        "ignore": "biasbn",
        "seed": 0,
        "dataset": spec.dataset,
        "samples": experiment.samples,
        "bn_mode": "eval",
    }
    h5 = spec.path.with_suffix(".h5")
    store_spec = SurfaceSpec(x, y, directions, "train", settings)
    with SurfaceStore.open_for_writing(h5, store_spec, resume=True) as store:
        evaluator = SurfaceEvaluator(model, F.cross_entropy, store.directions())
        compute_surface(
            evaluator, {"train": batches}, grid_points(x, y), store.pending(), store.write
        )
    figures.mkdir(parents=True, exist_ok=True)
    png = figures / f"{spec.dataset}_seed{spec.seed}_{spec.path.stem}_contour.png"
    plot_surfaces([h5], png, kind="contour", labels=[spec.label], log=True)
    return png


def seed_planes(
    specs: list[ModelSpec], experiment: Experiment, figures: Path, device="cpu"
) -> dict[str, dict[int, dict[str, Any]]]:
    """The teacher -> gen1 -> gen2 plane of every seed: ``{variant: {seed: plane report}}``.

    Each into ``<seed folder>/plane.h5`` (resumed), on ``contour_points`` per axis; the
    contour of seed 0 goes to ``figures``. None without contours or a second generation.
    """
    from cli.study.planes import plane_report

    planes: dict[str, dict[int, dict[str, Any]]] = {}
    if not experiment.contour_points or experiment.generations < 2:
        return planes
    for spec in (s for s in specs if s.group == "main" and s.role == "teacher"):
        name = variant(spec.dataset, spec.regime)
        trio = [spec.path] + [spec.path.with_name(f"gen{g}.safetensors") for g in (1, 2)]
        batches = first_examples(_bundle(experiment, spec.dataset, spec.regime).train_eval,
                                 experiment.samples, 256, device)  # fmt: skip
        figure = figures / f"{name}_seed{spec.seed}_plane.png" if spec.seed == 0 else None
        planes.setdefault(name, {})[spec.seed] = plane_report(
            trio, batches, spec.path.with_name("plane.h5"), experiment.contour_points, device,
            figure,
        )  # fmt: skip
    return planes


def _identity(spec: ModelSpec, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": spec.label,
        "path": str(spec.path),
        "dataset": spec.dataset,
        "regime": spec.regime,
        "variant": variant(spec.dataset, spec.regime),
        "seed": spec.seed,
        "group": spec.group,
        "role": spec.role,
        "generation": spec.generation,
        "teacher_epochs": spec.teacher_epochs,
        "checkpoint_test_accuracy": meta["metrics"]["test_accuracy"],
    }


def measure_ensemble(
    specs: list[ModelSpec], experiment: Experiment, device="cpu"
) -> dict[str, Any]:
    """Profile the two-teacher ensemble itself (averaged logits; Hessian over both nets)."""
    members = [load_checkpoint(s.path, device=device)[0] for s in specs]
    bundle = dataset_from_description(load_checkpoint(specs[0].path)[1]["dataset"])
    train = first_examples(bundle.train_eval, experiment.samples, experiment.samples, device)
    test = first_examples(bundle.test, None, 1024, device)
    record = profile_model(
        LogitEnsemble(members).eval(), F.cross_entropy, train, experiment.profile, test_batches=test
    )
    first = specs[0]
    return {
        **record,
        "name": "ensemble of 2 teachers",
        "dataset": first.dataset,
        "regime": first.regime,
        "variant": variant(first.dataset, first.regime),
        "seed": first.seed,
        "group": "ensemble",
        "role": "ensemble",
        "generation": 0,
    }


def add_matched_curvature(specs, records, experiment: Experiment, device="cpu") -> None:
    """Temperature-matched λ1 for the main models, per (variant, seed) group.

    The common target is the highest train loss in the group (a temperature can raise a
    model's loss freely but lower it only down to a floor), so every model can reach it.
    Cached (:mod:`cli.study.cache`) by checkpoint hash, target and settings.
    """
    by_path = {Path(r["path"]): r for r in records if r.get("path")}
    groups: dict[tuple[str, int], list[ModelSpec]] = {}
    for spec in specs:
        if spec.group == "main":
            groups.setdefault((variant(spec.dataset, spec.regime), spec.seed), []).append(spec)
    for group in groups.values():
        target = max(by_path[s.path]["train_loss"] for s in group)
        for spec in group:
            by_path[spec.path].update(_matched(spec, target, experiment, device))


def _matched(
    spec: ModelSpec, target: float, experiment: Experiment, device="cpu"
) -> dict[str, Any]:
    settings = {"target": target, "samples": experiment.samples, **asdict(experiment.profile)}

    def measure() -> dict[str, Any]:
        model, meta = load_checkpoint(spec.path, device=device)
        bundle = dataset_from_description(meta["dataset"])
        train = first_examples(bundle.train_eval, experiment.samples, experiment.samples, device)
        return matched_lambda_1(model, train, target, experiment.profile)

    return measured(spec.path, "matched_lambda_1", settings, measure).values


def _check_settings(root: Path, experiment: Experiment) -> None:
    """Refuse to mix runs with different settings in one folder."""
    path = root / "experiment.json"
    wanted = json.loads(json.dumps(experiment.to_json()))
    if path.is_file():
        stored = read_stamp(path)
        if stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            raise DistillInputError(
                f"{root} holds a reproduce run with other settings ({', '.join(changed)}); "
                "use another --out-dir"
            )
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(wanted, indent=2))


def read_stamp(path: Path) -> dict[str, Any]:
    """The settings a run folder records (``experiment.json``, ``sweep.json``)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DistillInputError(
            f"{path}: unreadable run settings ({type(err).__name__}); use another --out-dir"
        ) from None
    if not isinstance(stored, dict):
        raise DistillInputError(f"{path}: not a run's settings; use another --out-dir")
    return stored


def run_experiment(
    experiment: Experiment, out_dir: str | Path, quiet: bool = False, device="cpu"
) -> Path:
    """Train what is missing, measure what is not cached, write the report; return its path."""
    from cli._common import progress_bar

    root = Path(out_dir)
    _check_settings(root, experiment)
    specs = plan(experiment, root)
    start = time.perf_counter()
    records, trained = [], 0
    with progress_bar(len(specs), "models", quiet, unit="model") as bar:
        for spec in specs:
            if not spec.path.is_file():
                train_model(spec, experiment, device)
                trained += 1
            records.append(measure_model(spec, experiment, device))
            if experiment.contour_points and spec.seed == 0 and spec.group == "main":
                contour(spec, experiment, root / "figures", device)
            bar.update(1)
    for second in (s for s in specs if s.group == "ensemble" and s.role == "teacher"):
        first = next(s for s in specs if s.path == second.path.with_name("teacher.safetensors"))
        records.append(measure_ensemble([first, second], experiment, device))
    if experiment.profile.confounds:
        add_matched_curvature(specs, records, experiment, device)
    add_pair_measures(specs, records, experiment.samples, device)
    planes = seed_planes(specs, experiment, root / "figures", device)
    return write_report(root, experiment, specs, records, trained, time.perf_counter() - start,
                        planes)  # fmt: skip
