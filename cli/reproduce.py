"""`flatscape reproduce`: the paper's experiments at a scale that runs on a laptop."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli import choices
from cli._common import (
    apply_threads,
    device_option,
    quiet_option,
    resolve_device,
    threads_option,
)
from cli.outputs import OutputPlan

RUN_FILES = ("experiment.json", "report.md", "report.json")
"""The files of a run folder that no input may be (its stamp and its report; a sweep's
``sweep.json`` may be given back as ``--grid``: it is never rewritten)."""


@click.command()
@click.option(
    "--preset",
    type=click.Choice(choices.PRESETS),
    default="quick",
    show_default=True,
    help="quick: mnist1d, 3 seeds, 2 generations (a few minutes). full: mnist1d and "
    "digits, 3 seeds, 5 generations, ensemble and early-stopped-teacher experiments "
    "(about an hour). regimes: mnist1d clean / 20% and 40% label noise / 1000 "
    "train examples / augmentation, 5 seeds, 2 generations, 30 epochs, with GGN, "
    "adaptive sharpness and temperature-matched curvature (about an hour). sweep: student "
    "recipes (T 1/2/4 x alpha 0.5/1 x 1x/2x epochs x teacher's or quarter lr) over "
    "clean and 20%-noise MNIST-1D, widths 32 and 128, 3 seeds, the best recipe again on 3 "
    "fresh seeds (its time is estimated and printed first).",
)
@click.option(
    "--dataset", "datasets", multiple=True, help="Override the preset's datasets (repeatable)."
)
@click.option("--seeds", type=click.IntRange(min=1), help="Override the number of seeds.")
@click.option("--generations", type=click.IntRange(min=1), help="Override student generations.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override training epochs.")
@click.option(
    "--grid",
    "grid_file",
    type=click.Path(dir_okay=False),
    help="With --preset sweep: a JSON object of the grid (regimes, widths, temperatures, "
    "alphas, epoch_factors, lr_modes, seeds, fresh_seeds, teacher_epochs, samples, "
    "trace_matvecs); keys left out keep the preset's values.",
)
@click.option("--out-dir", type=click.Path(file_okay=False), required=True)
@quiet_option
@device_option
@threads_option
def reproduce(preset, datasets, seeds, generations, epochs, grid_file, out_dir, quiet, device,
              threads):  # fmt: skip
    """Train teachers and students over seeds, measure every model, write a report.

    Writes OUT_DIR/report.md (figures beside it) and OUT_DIR/report.json. Models and
    measurements already in OUT_DIR are reused, so a killed run continues where it
    stopped; a run with different settings into the same folder is refused.

    \b
    Example:
      flatscape reproduce --preset quick --out-dir runs/demo
    """
    from cli.study.experiment import Experiment, run_experiment

    apply_threads(threads)
    if preset == "sweep" or grid_file:
        _sweep(preset, datasets, seeds, generations, epochs, grid_file, out_dir, quiet, device)
        return
    experiment = Experiment.from_preset(
        preset, datasets=datasets or None, seeds=seeds, generations=generations, epochs=epochs
    )
    check_run_folder(out_dir, None)
    report = run_experiment(experiment, out_dir, quiet=quiet, device=resolve_device(device))
    echo_accuracy(report.with_name("report.json"))
    click.echo(f"report: {report}")


def check_run_folder(out_dir: str, grid_file: str | None) -> None:
    """The run folder's plan, once the settings are valid: reused, locked, not an input."""
    plan = OutputPlan(resume=True)  # a run folder continues where it stopped
    plan.folder("--out-dir", out_dir, RUN_FILES, resumable=True)
    plan.read("--grid", grid_file)
    plan.check()


def _sweep(preset, datasets, seeds, generations, epochs, grid_file, out_dir, quiet, device):
    """``--preset sweep``: the recipe grid (``cli.study.sweep``)."""
    from dataclasses import replace

    from cli.study.sweep import SweepGrid, run_sweep
    from distill.errors import DistillInputError

    if preset != "sweep":
        raise DistillInputError("--grid goes with --preset sweep")
    for flag, value in (("--dataset", datasets), ("--generations", generations)):
        if value:
            raise DistillInputError(f"{flag}: the sweep runs MNIST-1D, one generation per recipe")
    grid = SweepGrid.from_file(grid_file) if grid_file else SweepGrid()
    changes = {k: v for k, v in (("seeds", seeds), ("teacher_epochs", epochs)) if v}
    grid = replace(grid, **changes)
    check_run_folder(out_dir, grid_file)
    report = run_sweep(grid, out_dir, quiet=quiet, device=resolve_device(device))
    document = json.loads(report.with_name("report.json").read_text())
    click.echo(f"best recipe: {document['best']}")
    for cell, summary in document["fresh_summary"].items():
        gain = summary["gain"]["mean"]
        shown = "—" if gain is None else f"{100 * gain:+.2f}"
        click.echo(f"  {cell}: fresh-seed gain {shown} points, wins {summary['wins']}/"
                   f"{summary['seeds']}, beyond noise: {summary['beyond_noise']}")  # fmt: skip
    click.echo(f"report: {report}")


def echo_accuracy(report_json: Path) -> None:
    """Print the test accuracy per generation of every dataset, from the JSON report."""
    document = json.loads(report_json.read_text())
    for name, entry in document["datasets"].items():
        click.echo(f"{name}: test accuracy (%), mean ± std over seeds")
        for row in entry["by_generation"]:
            acc = row["test_accuracy"]
            label = "teacher" if row["generation"] == 0 else f"gen{row['generation']}"
            click.echo(
                f"  {label:<8}{100 * acc['mean']:6.2f} ± {100 * acc['std']:.2f}  (n={acc['n']})"
            )
