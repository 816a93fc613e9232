"""`flatscape eigenmap`: the largest and smallest Hessian eigenvalue over a grid of weights."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli._common import (
    apply_threads,
    device_option,
    force_option,
    json_option,
    loss_option,
    max_memory_option,
    memory_budget,
    parameter_filter,
    parameter_options,
    progress_bar,
    quiet_option,
    resolve_device,
    seed_option,
    source_options,
    sources_from,
    threads_option,
    train_samples_option,
)
from cli.outputs import OutputPlan, write_json
from cli.surface import saved_points_on_failure


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--x", "x_range", default="-1:1:11", show_default=True, help="x grid MIN:MAX:N.")
@click.option(
    "--y", "y_range", default="-1:1:11", show_default=True, help="y grid MIN:MAX:N, or none (1D)."
)
@click.option(
    "--normalization",
    type=click.Choice(["filter", "layer", "none"]),
    default="filter",
    show_default=True,
    help="Of the random directions (as `flatscape surface`: same seed, same axes).",
)
@click.option("--ignore", type=click.Choice(["biasbn", "none"]), default="biasbn",
              show_default=True, help="Zero biases and norm layers in the directions.")  # fmt: skip
@click.option(
    "--tol",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-3,
    show_default=True,
    help="lambda_max to this relative accuracy (Lanczos residual bound); lambda_min to this "
    "times |lambda_max|.",
)
@train_samples_option
@seed_option("the directions and of Lanczos")
@max_memory_option("the Hessian's kept gradient graphs", "")
@parameter_options(
    held="the eigenvalues are of the Hessian block of these rows and columns, while the "
    "grid still moves every parameter"
)
@loss_option
@source_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="HDF5 file.")
@click.option("--resume", is_flag=True, help="Continue OUT where a killed run stopped.")
@click.option(
    "--cold-start",
    is_flag=True,
    help="Start every point's Lanczos run from a random vector, not from a finished "
    "neighbour's Ritz vectors (the same values to --tol, more products; a resumed map then "
    "matches an unbroken one bit for bit).",
)
@json_option("a summary")
@force_option
@quiet_option
@device_option
@threads_option
def eigenmap(checkpoint, x_range, y_range, normalization, ignore, tol, samples, seed, max_memory,
             params, exclude, loss_spec, out, resume, cold_start, json_path, force, quiet, device,
             threads, **options):  # fmt: skip
    """lambda_max and lambda_min of the train-loss Hessian at every point of a grid.

    The point (a, b) is the weights theta + a*dx + b*dy along the random directions
    `flatscape surface` draws with the same --seed and --normalization; at each, one
    Lanczos run for both ends of the spectrum over the first --samples train examples,
    model in eval mode. Stored
    like a surface (resumable, locked) with the values lambda_max, lambda_min and
    train_loss; `flatscape plot --key lambda_ratio` draws |lambda_min / lambda_max|.
    Each point starts from a finished neighbour's Ritz vectors (--cold-start: from random
    ones).
    Grids above 441 points (21 x 21) need --force: each point costs tens of
    Hessian-vector products.

    \b
    Example:
      flatscape eigenmap runs/teacher.safetensors --x -1:1:11 --y -1:1:11 --out eig.h5
      flatscape plot eig.h5 --kind heatmap --key lambda_max --out eig.pdf
    """
    from landscape.surface.eigenmap import check_map_size, eigen_map
    from landscape.surface.grid import parse_grid

    apply_threads(threads)
    sources = sources_from(options)
    _plan(OutputPlan(force, resume), out, json_path, checkpoint, sources)
    max_memory = memory_budget(max_memory)
    y_range = None if y_range == "none" else y_range
    check_map_size(parse_grid(x_range, y_range, force)[2], force)  # before the checkpoint loads
    model, loss_fn, batches, recorded = _load(checkpoint, loss_spec, samples,
                                              resolve_device(device), sources)  # fmt: skip
    with progress_bar(None, "eigenmap", quiet, unit="pt") as bar, saved_points_on_failure(out):
        result = eigen_map(
            model, loss_fn, batches, out, x_range=x_range, y_range=y_range,
            normalization=normalization, ignore=ignore, seed=seed, tol=tol,
            max_memory=max_memory, params=parameter_filter(params, exclude), resume=resume,
            force=force, **recorded, progress=bar.update, warm_start=not cold_start,
        )  # fmt: skip
    if not quiet:
        click.echo(
            f"{out}: {result.points} points ({result.computed} computed in {result.seconds:.1f} s, "
            f"{result.matvecs} Hessian-vector products, {result.converged} of {result.computed} "
            "converged)"
        )
    write_json(Path(json_path) if json_path else None, result.to_dict())


def _load(checkpoint, loss_spec, samples, device, sources) -> tuple:
    """The model, its loss, its first ``samples`` train examples, and what the map records.

    ``settings`` a resumed run must match, ``info`` beside them.
    """
    from distill.checkpoint import file_sha256
    from distill.sources import (
        analysis_loss,
        check_loss,
        first_examples,
        open_checkpoint,
        provenance,
        recorded_loss,
    )

    loss_spec = loss_spec or recorded_loss(checkpoint)
    loss_fn, loss_record = analysis_loss(loss_spec)
    model, meta, bundle = open_checkpoint(checkpoint, device=device, sources=sources)
    batches = first_examples(bundle.train_eval, samples, 2**62, device)
    check_loss(loss_fn, model, batches[0], loss_spec)
    settings = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "dataset": meta["dataset"]["name"],
        "loss": loss_spec,
        "loss_source_sha256": loss_record.get("source_sha256") or "",
    }
    info = {"checkpoint": str(checkpoint), "provenance": json.dumps(provenance(meta))}
    return model, loss_fn, batches, {"settings": settings, "info": info}


def _plan(plan: OutputPlan, out, json_path, checkpoint, sources) -> None:
    """The map's outputs and inputs, checked before anything is loaded."""
    plan.file("--out", out, resumable=True)
    plan.file("--json", json_path)
    plan.read_checkpoints("CHECKPOINT", checkpoint)
    plan.read_sources(sources)
    plan.check()
