"""`flatscape sharpness`: loss increase within a radius, plain and adaptive, raw and matched."""

from __future__ import annotations

import click

from cli import choices
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
    quiet_option,
    resolve_device,
    seed_option,
    source_options,
    sources_from,
    threads_option,
    train_samples_option,
)
from cli.outputs import OutputPlan, write_json
from distill.errors import DistillInputError


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--measure",
    type=click.Choice(["average", "worst", "both"]),
    default="both",
    show_default=True,
    help="average: mean loss increase under Gaussian weight noise; worst: largest increase "
    "found by projected gradient ascent in the ball.",
)
@click.option(
    "--geometry",
    type=click.Choice([*choices.GEOMETRIES, "all"]),
    default="all",
    show_default=True,
    help="plain (Euclidean), elementwise (|w|-scaled, ASAM) or filterwise (filter RMS).",
)
@click.option(
    "--rho",
    type=click.FloatRange(min=0, min_open=True),
    help="Radius: noise std per normalized coordinate (average; default 0.05) or L2-ball "
    "radius in normalized coordinates (worst; default 0.1).",
)
@train_samples_option
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option(
    "--draws",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Antithetic noise draws for average-case sharpness.",
)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--restarts", type=click.IntRange(min=1), default=2, show_default=True)
@seed_option("the noise draws and ascent restarts")
@click.option(
    "--match-loss",
    type=click.FloatRange(min=0, min_open=True),
    help="Also measure at the temperature where the train loss equals this target.",
)
@click.option(
    "--match-teacher",
    type=click.Path(dir_okay=False),
    help="Also measure at the temperature where the train loss equals this checkpoint's.",
)
@max_memory_option(
    "one batch's gradient graph",
    "The gradient is taken batch by batch; a batch too large for the budget exits 2 "
    "before the run, naming the batch size that fits. The JSON report records the budget, "
    "the graph bytes and the peak.",
)
@parameter_options
@loss_option
@source_options
@json_option("the report")
@force_option
@quiet_option
@device_option
@threads_option
def sharpness(checkpoint, measure, geometry, rho, samples, batch_size, draws, steps,
              restarts, seed, match_loss, match_teacher, max_memory, params, exclude, loss_spec,
              json_path, force, quiet, device, threads, **sources):  # fmt: skip
    """Average- and worst-case sharpness of CHECKPOINT, beside its train loss.

    Loss increase on the first --samples train examples when the weights move within a
    radius, in the plain geometry and in the reparametrization-aware element-wise and
    filter-wise ones (unchanged when a ReLU layer is scaled by c and the next by 1/c).
    With --match-loss or --match-teacher the logits are also divided by the temperature
    that brings the train loss to the target, and sharpness and the top Hessian
    eigenvalue are reported for the raw and the matched model.

    \b
    Example:
      flatscape sharpness runs/sd/gen1.safetensors --measure average --geometry elementwise
      flatscape sharpness runs/sd/gen1.safetensors --match-teacher runs/teacher.safetensors
    """
    from cli.study.sharpness import checkpoint_sharpness, sharpness_lines
    from distill.sources import analysis_loss, recorded_loss
    from landscape.sharpness import GEOMETRIES

    apply_threads(threads)
    plan = OutputPlan(force)
    json_path = plan.file("--json", json_path)
    plan.read_checkpoints("CHECKPOINT", checkpoint)
    plan.read_checkpoints("--match-teacher", match_teacher)
    if match_loss is not None and match_teacher is not None:
        raise DistillInputError("give either --match-loss or --match-teacher, not both")
    torch_device = resolve_device(device)
    max_memory = memory_budget(max_memory)  # a bad size fails before the checkpoint loads
    loss_spec = loss_spec or recorded_loss(checkpoint)
    loss_fn, loss_record = analysis_loss(loss_spec)
    if loss_spec != "cross_entropy" and (match_loss is not None or match_teacher is not None):
        raise DistillInputError(
            "--match-loss/--match-teacher match a cross-entropy; drop them or --loss"
        )
    named = sources_from(sources)
    plan.read_sources(named)
    plan.check()
    report = checkpoint_sharpness(
        checkpoint, ["average", "worst"] if measure == "both" else [measure],
        list(GEOMETRIES) if geometry == "all" else [geometry], rho, loss_fn=loss_fn,
        loss_record=loss_record, loss_spec=loss_spec, samples=samples, batch_size=batch_size,
        draws=draws, steps=steps, restarts=restarts, seed=seed, match_loss=match_loss,
        match_teacher=match_teacher, max_memory=max_memory,
        params=parameter_filter(params, exclude), sources=named, device=torch_device,
        quiet=quiet,
    )  # fmt: skip
    click.echo("\n".join(sharpness_lines(report)))
    write_json(json_path, report)
