"""`flatscape sharpness`: loss increase within a radius, plain and adaptive, raw and matched."""

from __future__ import annotations

import time
from typing import Any

import click

from cli import _choices as choices
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
from cli._outputs import OutputPlan, write_json
from distill.errors import DistillInputError

DEFAULT_RHO = {"average": 0.05, "worst": 0.1}


def _target_loss(
    match_loss: float | None, match_teacher: str | None, loaded, samples: int, device, sources
):
    """The train loss to match: given, or the teacher's on the same examples, or None."""
    from distill.analysis import load_for_analysis
    from landscape.curvature.temperature import mean_cross_entropy

    if match_teacher is None:
        return match_loss, None
    teacher = load_for_analysis(match_teacher, samples=samples, device=device, sources=sources)
    if teacher.metadata["dataset"] != loaded.metadata["dataset"]:
        raise DistillInputError(
            f"--match-teacher {match_teacher}: trained on other data than {loaded.path} "
            "(dataset descriptions differ); match to a teacher of the same dataset"
        )
    return mean_cross_entropy(teacher.model, teacher.batches), teacher.sha256


def _measure(model, loss_fn, batches, measures, geometries, rho, options, bar, memory: dict):
    """One sharpness report per measure (each with its own default radius).

    The memory record of the last report goes into ``memory``.
    """
    from landscape.sharpness import sharpness_report

    results = []
    for measure in measures:
        report = sharpness_report(
            model, loss_fn, batches, rho or DEFAULT_RHO[measure], [measure], geometries,
            progress=bar.update, **options,
        )  # fmt: skip
        results.extend(report["results"])
        memory.update(report["memory"])
    return results


def _print_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    click.echo(
        f"{'model':<9}{'measure':<9}{'geometry':<13}{'rho':>7}{'train loss':>12}"
        f"{'increase':>12}{'+-':>11}"
    )
    for model, r in rows:
        error = r["stderr"] if r["stderr"] is not None else r["spread"]
        kind = "se" if r["stderr"] is not None else "sd"
        click.echo(
            f"{model:<9}{r['measure']:<9}{r['geometry']:<13}{r['rho']:>7.3g}{r['loss']:>12.6f}"
            f"{r['increase']:>12.6f}{error:>9.6f} {kind}"
        )


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
    from distill.analysis import load_for_analysis, provenance
    from distill.losses import analysis_loss, check_loss
    from landscape.curvature.temperature import TemperatureScaled, temperature_matched_curvature
    from landscape.operators.mean_loss import select_parameters
    from landscape.sharpness import GEOMETRIES, planned_evaluations

    start = time.perf_counter()
    apply_threads(threads)
    plan = OutputPlan(force)
    json_path = plan.file("--json", json_path)
    plan.read_checkpoints("CHECKPOINT", checkpoint)
    plan.read_checkpoints("--match-teacher", match_teacher)
    if match_loss is not None and match_teacher is not None:
        raise DistillInputError("give either --match-loss or --match-teacher, not both")
    torch_device = resolve_device(device)
    max_memory = memory_budget(max_memory)  # a bad size fails before the checkpoint loads
    loss_fn, loss_record = analysis_loss(loss_spec)
    if loss_spec != "cross_entropy" and (match_loss is not None or match_teacher is not None):
        raise DistillInputError(
            "--match-loss/--match-teacher match a cross-entropy; drop them or --loss"
        )
    named = sources_from(sources)
    plan.read_sources(named)
    plan.check()
    loaded = load_for_analysis(
        checkpoint, samples=samples, batch_size=batch_size, device=torch_device, sources=named
    )
    check_loss(loss_fn, loaded.model, loaded.batches[0], loss_spec)
    target, teacher_sha = _target_loss(
        match_loss, match_teacher, loaded, samples, torch_device, named
    )
    measures = ["average", "worst"] if measure == "both" else [measure]
    geometries = list(GEOMETRIES) if geometry == "all" else [geometry]
    options = {"samples": draws, "steps": steps, "restarts": restarts, "seed": seed}
    selection = parameter_filter(params, exclude)
    memory: dict[str, Any] = {}
    models = {"raw": loaded.model}
    matched = None
    if target is not None:
        matched = temperature_matched_curvature(
            loaded.model, loaded.batches, target, seed=seed, params=selection
        )
        models["matched"] = TemperatureScaled(loaded.model, matched["temperature"])
    total = len(models) * planned_evaluations(measures, geometries, draws, steps, restarts)
    results = {}
    with progress_bar(total, "sharpness", quiet, unit="pass") as bar:
        for name, model in models.items():
            results[name] = _measure(
                model, loss_fn, loaded.batches, measures, geometries, rho,
                {**options, "max_memory": max_memory, "params": selection}, bar, memory,
            )  # fmt: skip
    click.echo(f"{loaded.path}: {loaded.samples} train examples")
    if matched is not None:
        raw, scaled = matched["raw"], matched["matched"]
        click.echo(
            f"temperature {matched['temperature']:.4f} matches train loss {target:.6f} "
            f"(raw {raw['loss']:.6f}); top Hessian eigenvalue raw "
            f"{raw['eigenvalues'][0]:.4f}, matched {scaled['eigenvalues'][0]:.4f}"
        )
    _print_table([(name, r) for name, rows in results.items() for r in rows])
    write_json(json_path, {
        "checkpoint": str(loaded.path),
        "checkpoint_sha256": loaded.sha256,
        "data": {"dataset": loaded.dataset_name, "split": "train", "samples": loaded.samples},
        "provenance": provenance(loaded.metadata),
        "settings": {**options, "rho": rho, "default_rho": DEFAULT_RHO, "loss": loss_spec},
        "loss_function": loss_record,
        "params": None if selection is None else selection.describe(),
        "parameters": sum(p.numel() for n, p in loaded.model.named_parameters()
                          if n in select_parameters(loaded.model, selection)),  # fmt: skip
        "sharpness": results["raw"],
        "temperature_matched": None if matched is None else {
            **matched, "teacher_sha256": teacher_sha, "sharpness": results["matched"],
        },
        "memory": memory,
        "seconds": time.perf_counter() - start,
    })  # fmt: skip
