"""`flatscape train` and `flatscape distill`: a teacher, then self-distilled generations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli import choices
from cli._common import (
    apply_threads,
    device_option,
    force_option,
    model_options,
    output_key_option,
    progress_bar,
    quiet_option,
    resolve_device,
    threads_option,
    user_data_options,
)
from cli.outputs import OutputError, OutputPlan, write_json
from distill.errors import DistillInputError

if TYPE_CHECKING:  # annotations only; the module loads inside the command
    from distill.trainer import Recipe


def _epoch_logger(log_path: Path, bar):
    from distill.trainer import json_lines_log

    write = json_lines_log(log_path)

    def log(record: dict) -> None:
        write(record)
        if "lambda_1" in record:  # a tracked step, not an epoch
            bar.set_postfix(lambda_1=f"{record['lambda_1']:.4g}")
            return
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", test_acc=f"{record['test_accuracy']:.3f}")

    return log


def _plan_checkpoint(plan: OutputPlan, flag: str, out: str | Path, snapshots: int | None) -> Path:
    """A checkpoint in the plan, with its log and (with --snapshots) its snapshot folder."""
    out = plan.file(flag, out)
    plan.file(f"{flag} (its log)", log_path(out))
    if snapshots:
        plan.folder("--snapshots", out.with_suffix(".snapshots"))
    return out


def log_path(checkpoint: Path) -> Path:
    """The JSON-lines log beside a checkpoint: ``OUT`` with ``.log.jsonl``."""
    return checkpoint.with_suffix(".log.jsonl")


def _save(path: Path, model, meta: dict) -> None:
    """Save a trained model; if the disk refuses, print its metrics and say what is kept."""
    from distill.checkpoint import save_checkpoint

    try:
        save_checkpoint(path, model, meta)
    except OSError as err:
        metrics = ", ".join(f"{k} {v:.6g}" for k, v in meta["metrics"].items()
                            if isinstance(v, float))  # fmt: skip
        raise OutputError(
            f"cannot write {path}: {err.strerror}; the trained weights are lost (final "
            f"metrics: {metrics}; every epoch is in {log_path(path)})"
        ) from None


def _recipe(base: Recipe, **given) -> Recipe:
    """The base recipe with the options the user actually gave."""
    changes = {k: v for k, v in given.items() if v is not None}
    if "milestones" in changes:
        changes["milestones"] = tuple(int(m) for m in changes["milestones"].split(",") if m)
    return replace(base, **changes)


def snapshots_option(func):
    """``--snapshots N``: weight snapshots along training, beside the checkpoint."""
    return click.option(
        "--snapshots",
        type=click.IntRange(min=2),
        help="Also write N evenly spaced weight snapshots (the init, the end and between) "
        "into OUT.snapshots/epoch_NNNN.safetensors: a trajectory for `flatscape surface "
        "--direction pca --trajectory`.",
    )(func)


def _snapshots(checkpoint: Path, count: int | None, force: bool):
    """The snapshot writer beside ``checkpoint`` (None without --snapshots); refuses to mix runs."""
    from distill.trainer import Snapshots

    if count is None:
        return None
    directory = checkpoint.with_suffix(".snapshots")
    old = sorted(directory.glob("epoch_*.safetensors")) if directory.is_dir() else []
    if old and not force:
        raise DistillInputError(
            f"{directory} holds snapshots of another run; pass --force to replace them"
        )
    for path in old:
        path.unlink()
    return Snapshots(directory, count)


def tracking_options(func):
    """``--track-*``: λ1 of the first train examples while training, into the run's log."""
    options = [
        click.option(
            "--track-sharpness",
            type=click.IntRange(min=1),
            metavar="N",
            help="Measure lambda_1 every N optimizer steps (and after the last), into the "
            "JSON-lines log beside the checkpoint (key lambda_1, with step, lr, momentum, "
            "loss and stability_threshold (2 + 2 momentum) / lr).",
        ),
        click.option(
            "--track-every-epoch",
            is_flag=True,
            help="Measure lambda_1 after each epoch's last step (alone or with --track-sharpness).",
        ),
        click.option(
            "--track-samples",
            type=click.IntRange(min=1),
            default=256,
            show_default=True,
            help="First train examples the tracked Hessian is taken over (in dataset order, "
            "no augmentation: what `flatscape hessian --samples N` measures).",
        ),
        click.option(
            "--track-tol",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=1e-3,
            show_default=True,
            help="Relative tolerance of each tracked lambda_1 (Lanczos residual bound, as "
            "`flatscape hessian --tol`); 1e-2 spends about a quarter fewer products.",
        ),
        click.option("--track-trace", is_flag=True, help="Also a Hutch++ trace per measurement."),
        click.option(
            "--track-bn-mode",
            type=click.Choice(["eval", "train"]),
            default="eval",
            show_default=True,
            help="BatchNorm during tracked measurements (train: batch statistics).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _tracking(options: dict):
    """The trainer's sharpness tracker from the ``--track-*`` options (popped), or None."""
    from cli.study.tracking import TrackingSettings, training_sharpness

    return training_sharpness(TrackingSettings(
        every=options.pop("track_sharpness"), every_epoch=options.pop("track_every_epoch"),
        samples=options.pop("track_samples"), trace=options.pop("track_trace"),
        bn_mode=options.pop("track_bn_mode"), tol=options.pop("track_tol"),
    ))  # fmt: skip


def recipe_options(func):
    """Optimiser options; each defaults to the dataset's (or teacher's) recipe."""
    options = [
        click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: recipe)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak lr."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Mini-batch size."),
        click.option("--momentum", type=click.FloatRange(0, 1, max_open=True)),
        click.option("--weight-decay", type=click.FloatRange(min=0)),
        click.option("--schedule", type=click.Choice(["cosine", "multistep", "constant"])),
        click.option(
            "--milestones", help="Epochs where multistep multiplies lr by 0.1, e.g. 150,180,210."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.option(
    "--dataset",
    type=click.Choice(choices.DATASETS),
    help="A built-in dataset  [default: mnist1d, unless --data or --data-file].",
)
@click.option("--data-root", type=click.Path(), help="Folder with CIFAR python batches.")
@user_data_options
@model_options
@output_key_option
@recipe_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-size", type=click.IntRange(min=1), help="Keep the first N train examples.")
@click.option(
    "--label-noise",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of train labels flipped to another class, in [0, 1).",
)
@click.option("--noise-seed", type=int, default=0, show_default=True)
@click.option(
    "--augment",
    is_flag=True,
    help="mnist1d: fresh random shifts/scale/shear/noise per batch (MNIST-1D's "
    "generative process). CIFAR is always augmented (crop + flip).",
)
@click.option(
    "--test-size",
    type=click.IntRange(min=10),
    help="mnist1d: generate this many test examples (default 1000).",
)
@click.option(
    "--loss",
    type=click.Choice(choices.TRAINING_LOSSES),
    help="cross_entropy on class labels, or a token loss on token labels (N, L) (-100 "
    "not counted; the mean over tokens); students of the teacher train with it.  "
    "[default: causal_lm for --dataset tokens, else cross_entropy]",
)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint path.")
@snapshots_option
@tracking_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Final metrics.")
@force_option
@quiet_option
@device_option
@threads_option
def train(dataset, data_root, data_spec, data_kwargs, data_file, model_spec, model_kwargs,
          output_key, seed, train_size, label_noise, noise_seed, augment, test_size, loss, out,
          snapshots, json_path, force, quiet, device, threads, **recipe_given):  # fmt: skip
    """Train a teacher on hard labels and save it as a .safetensors checkpoint.

    Defaults per dataset: mnist1d -> cnn1d, 60 epochs, SGD lr 0.1, momentum 0.9,
    wd 5e-4, batch 128, cosine. Your own data (--data, --data-file) needs --model and
    trains 20 epochs at lr 0.05, batch 64 by default. A per-epoch JSON-lines log is
    written beside the checkpoint (OUT with .log.jsonl); --track-sharpness N and
    --track-every-epoch add lambda_1 records to it (`flatscape plot OUT.log.jsonl`).
    Same command and seed, same bytes (tracking included).

    \b
    Examples:
      flatscape train --dataset mnist1d --epochs 60 --seed 0 --out runs/teacher.safetensors
      flatscape train --track-every-epoch --out runs/teacher.safetensors
      flatscape train --data-file data.npz --model mynet.py:Net \\
          --model-kwargs '{"width": 64}' --out runs/teacher.safetensors
    """
    from distill.sources import Sources
    from distill.trainer import DEFAULT_LOSS, train_teacher
    from distill.user_code import parse_json_kwargs

    apply_threads(threads)
    plan = OutputPlan(force)
    out = _plan_checkpoint(plan, "--out", out, snapshots)
    json_path = plan.file("--json", json_path)
    plan.read("--data-file", data_file)
    plan.read_sources(Sources(model=model_spec, data=data_spec))
    plan.check()
    bundle, default_recipe = _bundle(dataset, data_root, data_spec, data_kwargs, data_file,
                                     train_size, label_noise, noise_seed, augment,
                                     test_size)  # fmt: skip
    tracker = _tracking(recipe_given)
    recipe = _recipe(default_recipe, **recipe_given)
    loss = loss or DEFAULT_LOSS.get(bundle.description["name"], "cross_entropy")
    overrides = parse_json_kwargs(model_kwargs, "--model-kwargs")
    writer = _snapshots(out, snapshots, force)
    with progress_bar(recipe.epochs, "teacher", quiet, unit="epoch") as bar:
        model, meta = train_teacher(
            bundle, arch=model_spec, recipe=recipe, seed=seed, arch_overrides=overrides,
            device=resolve_device(device), log=_epoch_logger(log_path(out), bar),
            snapshots=writer, loss=loss, tracker=tracker, output_key=output_key,
        )  # fmt: skip
    _save(out, model, meta)
    metrics = meta["metrics"]
    click.echo(
        f"teacher {out}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"train loss {metrics['train_loss']:.4f}"
    )
    write_json(json_path, {"checkpoint": str(out), **metrics})


def _bundle(dataset, data_root, data_spec, data_kwargs, data_file, train_size, label_noise,
            noise_seed, augment, test_size) -> tuple:  # fmt: skip
    """The data the options name (built-in or the user's) and its default teacher recipe."""
    from distill.data import load_dataset
    from distill.sources import Sources
    from distill.trainer import TEACHER_RECIPES, USER_DATA_RECIPE
    from distill.user_code import parse_json_kwargs

    if data_kwargs is not None and not data_spec:
        raise DistillInputError("--data-kwargs are the arguments of --data; give --data")
    if data_spec or data_file:
        given = [flag for flag, value in (("--train-size", train_size), ("--label-noise",
                 label_noise), ("--augment", augment), ("--test-size", test_size),
                 ("--data-root", data_root)) if value]  # fmt: skip
        if given:
            raise DistillInputError(
                f"{given[0]} applies to built-in datasets, not --data/--data-file"
            )
        sources = Sources(dataset=dataset, data=data_spec, data_file=data_file,
                          data_kwargs=parse_json_kwargs(data_kwargs, "--data-kwargs"))  # fmt: skip
        return sources.bundle(), USER_DATA_RECIPE
    else:
        dataset = dataset or "mnist1d"
        bundle = load_dataset(
            dataset,
            root=data_root,
            train_size=train_size,
            label_noise=label_noise,
            noise_seed=noise_seed,
            augment=augment,
            **({"test_size": test_size} if test_size else {}),
        )
        return bundle, TEACHER_RECIPES[dataset]


@click.command()
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False),
    required=True,
    help="Teacher checkpoint (generation 0, or any generation to continue from).",
)
@click.option("--generations", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    help="Softmax temperature T of teacher and student.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help=choices.ALPHA_MEANING + ".",
)
@recipe_options
@click.option("--seed", type=int, help="Student seed (default: teacher seed + generation).")
@click.option(
    "--model",
    "model_spec",
    metavar="SPEC",
    help="The teacher's model code (file.py:callable) or Hugging Face folder (hf:DIR), "
    "when it was made from yours: named again so that it may be imported.",
)
@click.option(
    "--data",
    "data_spec",
    metavar="SPEC",
    help="The teacher's data code, when it was made from yours (named again).",
)
@click.option("--data-kwargs", metavar="JSON", help="New keyword arguments of --data.")
@click.option("--out-dir", type=click.Path(file_okay=False), required=True)
@snapshots_option
@tracking_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Accuracy table.")
@force_option
@quiet_option
@device_option
@threads_option
def distill(teacher, generations, temperature, alpha, seed, model_spec, data_spec, data_kwargs,
            out_dir, snapshots, json_path, force, quiet, device, threads,
            **recipe_given):  # fmt: skip
    """Self-distil: train generations 1..G, each from the previous one's soft outputs.

    Each student is a freshly initialised copy of the teacher's architecture (born-again
    networks), trained on the teacher's dataset. The default recipe is the teacher's at
    a quarter of its lr with a 2-epoch warm-up, stable at T=4 (lr 0.1 collapses to
    chance on MNIST-1D). Writes OUT_DIR/gen1.safetensors, gen2, ... and prints a table;
    each beside its JSON-lines log (--track-* as for `flatscape train`).

    \b
    Example:
      flatscape distill --teacher runs/teacher.safetensors --generations 2 \\
          --temperature 4 --alpha 1.0 --out-dir runs/sd
    """
    from distill.checkpoint import load_checkpoint
    from distill.losses import KDConfig
    from distill.sources import Sources
    from distill.trainer import recipe_for_student, require_flatscape_teacher, train_student
    from distill.user_code import parse_json_kwargs

    apply_threads(threads)
    kd = KDConfig(temperature=temperature, alpha=alpha)
    require_flatscape_teacher(teacher)
    if data_kwargs is not None and data_spec is None:
        raise DistillInputError("--data-kwargs are the arguments of --data; give --data")
    _, parent = load_checkpoint(teacher, named_model=model_spec)
    new_kwargs = None if data_kwargs is None else parse_json_kwargs(data_kwargs, "--data-kwargs")
    start = parent.get("generation", 0)
    names = [f"gen{start + g}" for g in range(1, generations + 1)]
    plan = OutputPlan(force)
    folder = plan.folder("--out-dir", out_dir)
    paths = [_plan_checkpoint(plan, "--out-dir", folder / f"{n}.safetensors", snapshots)
             for n in names]  # fmt: skip
    json_path = plan.file("--json", json_path)
    plan.read_checkpoints("--teacher", teacher)
    plan.read_sources(Sources(model=model_spec, data=data_spec))
    plan.check()
    writers = [_snapshots(path, snapshots, force) for path in paths]
    tracker = _tracking(recipe_given)
    recipe = _recipe(recipe_for_student(parent), **recipe_given)
    rows = [("teacher" if start == 0 else f"gen{start}", parent["metrics"])]
    previous = Path(teacher)
    for path, writer in zip(paths, writers, strict=True):
        with progress_bar(recipe.epochs, path.stem, quiet, unit="epoch") as bar:
            student_seed = None if seed is None else seed + len(rows) - 1
            model, meta = train_student(
                previous, kd, recipe=recipe, seed=student_seed, device=resolve_device(device),
                log=_epoch_logger(log_path(path), bar), named_model=model_spec,
                data_spec=data_spec, data_kwargs=new_kwargs, snapshots=writer, tracker=tracker,
            )  # fmt: skip
        _save(path, model, meta)
        rows.append((path.stem, meta["metrics"]))
        previous = path
    click.echo(f"{'model':<10}{'test acc':>10}{'train loss':>12}")
    for name, metrics in rows:
        click.echo(f"{name:<10}{metrics['test_accuracy']:>10.4f}{metrics['train_loss']:>12.4f}")
    write_json(json_path, {"models": [{"name": n, **m} for n, m in rows]})
