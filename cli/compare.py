"""`flatscape compare`: teacher and students side by side, measured the same way."""

from __future__ import annotations

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
from cli.outputs import OutputPlan, report_kept_on_failure, write_json, write_text_output
from distill.errors import DistillInputError


@click.command()
@click.argument("checkpoints", nargs=-1, required=True)
@train_samples_option
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--tol",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Relative tolerance of the eigenvalues.",
)
@click.option(
    "--trace-matvecs",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="HVPs spent on the Hutch++ trace (0: skip the trace).",
)
@click.option(
    "--line-points",
    type=click.IntRange(min=0),
    default=21,
    show_default=True,
    help="Points of the 1D filter-normalized surface on [-1, 1] (0: skip).",
)
@seed_option("the Lanczos start, the trace probes and the direction")
@click.option(
    "--surface",
    is_flag=True,
    help="Also the loss on the straight line teacher -> each student (alpha in "
    "[-0.5, 1.5], 41 points), and with --plots its figure.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False),
    help="Write lines.png (each model along its own filter-normalized direction, "
    "same seed) and, with --surface, interpolation.png (teacher -> each student) here.",
)
@click.option(
    "--confounds",
    is_flag=True,
    help="Also GGN λ1, element-wise adaptive sharpness (average and worst case) "
    "and λ1 at a matched train loss (each model's logits divided by a fitted "
    "temperature so all reach the highest train loss among them).",
)
@click.option(
    "--plane",
    is_flag=True,
    help="Also the plane through the reference and the next two checkpoints (e.g. teacher, "
    "gen1, gen2; raw weights, Gram-Schmidt): each model's position and train loss, and "
    "with --plots plane.h5 and its contour plane.png.",
)
@click.option(
    "--plane-points", type=click.IntRange(min=2, max=1000), default=21, show_default=True,
    help="Points per axis of the --plane grid.",
)  # fmt: skip
@click.option(
    "--connectivity",
    is_flag=True,
    help="Also each student against the reference as a pair: loss and accuracy barrier "
    "on the straight path (BatchNorm statistics recomputed at each point), top-1 "
    "agreement, KL(teacher || student) and per-layer linear CKA; with --plots "
    "connectivity.png.",
)
@click.option(
    "--curve",
    is_flag=True,
    help="Also train a quadratic Bezier curve from the reference to each student and "
    "report its largest train loss (implies --connectivity); with --plots its file "
    "curve-NAME.h5.",
)
@click.option(
    "--align",
    is_flag=True,
    help="Also the barrier after aligning each student to the reference by weight "
    "matching (aligned_barrier, as `flatscape align` aligns; implies --connectivity); "
    "with --plane, the two students are aligned before the plane is built.",
)
@click.option("--curve-steps", type=click.IntRange(min=0),
              help="SGD steps of each --curve.  [default: 200]")  # fmt: skip
@click.option("--curve-lr", type=click.FloatRange(min=0, min_open=True),
              help="Learning rate of each --curve.  [default: 0.05]")  # fmt: skip
@click.option(
    "--labels",
    help="Comma-separated names of the rows, one per checkpoint (default: the file stems).",
)
@click.option("--allow-mixed", is_flag=True, help="Compare different architectures/datasets.")
@parameter_options
@click.option(
    "--per-layer",
    is_flag=True,
    help="Also lambda_1 and the trace of each module's block per model (in the JSON, and "
    "with --plots the bar chart per_layer.png, models side by side).",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=2),
    help="Also lambda_1 on R disjoint subsets of the whole train split, the same for every "
    "model: its sd per model, and whether each change against the reference exceeds the "
    "spread of the paired difference (2 sd).",
)
@click.option(
    "--resample-size", type=click.IntRange(min=1), default=512, show_default=True,
    help="Examples per subset of --resamples.",
)  # fmt: skip
@click.option("--bootstrap", is_flag=True, help="Draw the --resamples subsets with replacement.")
@click.option(
    "--per-layer-table",
    type=click.Path(dir_okay=False),
    help="Write the per-layer rows of every model here (.md Markdown or .csv); implies "
    "--per-layer.",
)
@max_memory_option(
    "the gradient graphs of the curvature measurements",
    "As for flatscape hessian: graphs beyond it are rebuilt at every product.",
)
@loss_option
@source_options
@json_option("the comparison")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False))
@force_option
@quiet_option
@device_option
@threads_option
def compare(checkpoints, surface, plane, plane_points, plots_dir, samples, batch_size, top_k, tol,
            trace_matvecs, line_points, seed, confounds, connectivity, curve, align, curve_steps,
            curve_lr, labels, allow_mixed, params, exclude, per_layer, resamples, resample_size,
            bootstrap, per_layer_table, max_memory, loss_spec, json_path, markdown_path,
            csv_path, force, quiet, device, threads, **options):  # fmt: skip
    """Compare checkpoints: accuracy, train loss, top eigenvalues, trace, basin width.

    All models are measured on the same data with the same settings; changes are
    relative to the teacher (generation 0) or else the first checkpoint. Train loss is
    printed beside every sharpness number: a saturated softmax looks flat.

    \b
    Example:
      flatscape compare runs/teacher.safetensors runs/sd/gen1.safetensors \\
          runs/sd/gen2.safetensors --labels teacher,gen1,gen2 --connectivity \\
          --markdown cmp.md --json cmp.json
    """
    from cli.study import comparison
    from distill.sources import analysis_loss, recorded_loss
    from landscape.compare.profile import ProfileSettings

    apply_threads(threads)
    loss_spec = loss_spec or recorded_loss(checkpoints[0])
    loss_fn, loss_record = analysis_loss(loss_spec)
    per_layer = per_layer or per_layer_table is not None
    _check_requests(confounds, loss_spec, bootstrap, resamples, plane, len(checkpoints))
    sources = sources_from(options)
    labels = labels.split(",") if labels is not None else None
    names = comparison.checkpoint_names(list(checkpoints), labels)
    pairs = _pairs(connectivity or curve or align, curve, align, curve_steps, curve_lr, seed,
                   plots_dir)  # fmt: skip
    outputs = _outputs(
        OutputPlan(force), (json_path, markdown_path, csv_path, per_layer_table), plots_dir,
        _plot_names(plane, line_points, surface, per_layer, pairs, names), checkpoints, sources,
    )  # fmt: skip
    settings = ProfileSettings(top_k=top_k, tol=tol, trace_matvecs=trace_matvecs,
                               line_points=line_points, seed=seed, confounds=confounds,
                               params=parameter_filter(params, exclude),
                               max_memory=memory_budget(max_memory))  # fmt: skip
    device = resolve_device(device)
    with progress_bar(len(checkpoints), "models", quiet, unit="model") as bar:
        report = comparison.compare_checkpoints(
            list(checkpoints), settings, samples, batch_size, device, allow_mixed,
            progress=bar.update, interpolation_points=41 if surface else 0, sources=sources,
            loss_fn=loss_fn, per_layer=per_layer, resamples=resamples,
            resample_size=resample_size, loss_name=loss_spec, bootstrap=bootstrap, labels=labels,
            connectivity=pairs,
        )  # fmt: skip
    report["loss_function"] = loss_record
    with report_kept_on_failure(report):  # a full disk must not lose the measurements
        comparison.add_plane_and_plots(report, samples, plots_dir, plane_points if plane else 0,
                                       device, sources, loss_fn, align)  # fmt: skip
    tables = comparison.comparison_tables(report, confounds, bool(resamples), trace_matvecs > 0)
    click.echo(comparison.comparison_summary(report, tables["markdown"], samples), nl=False)
    _write(outputs, report, tables)


def _write(outputs: list, report: dict, tables: dict[str, str]) -> None:
    """The JSON, Markdown, CSV and per-layer files that were asked for."""
    from cli.study.comparison import per_layer_text

    write_json(outputs[0], report)
    with report_kept_on_failure(report):
        write_text_output(outputs[1], tables["markdown"])
        write_text_output(outputs[2], tables["csv"])
        if outputs[3] is not None:
            write_text_output(outputs[3], per_layer_text(report["models"], outputs[3].suffix))


def _check_requests(confounds: bool, loss_spec: str, bootstrap: bool, resamples: int | None,
                    plane: bool, models: int) -> None:  # fmt: skip
    if confounds and loss_spec != "cross_entropy":
        raise DistillInputError("--confounds match a cross-entropy by temperature; drop --loss")
    if bootstrap and not resamples:
        raise DistillInputError("--bootstrap draws the --resamples subsets; give --resamples")
    if plane and models < 3:
        raise DistillInputError(f"--plane needs three checkpoints; {models} given")


def _outputs(plan: OutputPlan, paths, plots_dir, plot_names, checkpoints, sources) -> list:
    """The JSON, Markdown, CSV and per-layer table files and the plots, checked as a plan."""
    flags = ("--json", "--markdown", "--csv", "--per-layer-table")
    outputs = [plan.file(flag, path) for flag, path in zip(flags, paths, strict=True)]
    if outputs[3] is not None and outputs[3].suffix not in (".md", ".csv"):
        raise DistillInputError(f"--per-layer-table {outputs[3]}: end it in .md or .csv")
    plan.folder("--plots", plots_dir, plot_names)
    plan.read_checkpoints("CHECKPOINTS", *checkpoints)
    plan.read_sources(sources)
    plan.check()
    return outputs


def _pairs(connectivity: bool, curve: bool, align: bool, steps: int, lr: float, seed: int,
           plots_dir):  # fmt: skip
    """The ``--connectivity`` request (curves into ``--plots``), or None."""
    from pathlib import Path

    from cli.study.connectivity import ConnectivityRequest

    if not curve and (steps is not None or lr is not None):
        raise DistillInputError("--curve-steps and --curve-lr set the --curve; give --curve")
    if not connectivity:
        return None
    given = {"curve_steps": steps, "curve_lr": lr}
    return ConnectivityRequest(curve=curve, seed=seed, align=align,
                               folder=Path(plots_dir) if plots_dir and curve else None,
                               **{k: v for k, v in given.items() if v is not None})  # fmt: skip


def _plot_names(plane: bool, line_points: int, surface: bool, per_layer: bool, pairs,
                names: list[str]) -> list[str]:  # fmt: skip
    """The files ``--plots`` writes with these options (curve files: every row's name)."""
    wanted = {"plane.h5": plane, "plane.png": plane, "lines.png": line_points > 0,
              "interpolation.png": surface, "per_layer.png": per_layer,
              "connectivity.png": pairs is not None}  # fmt: skip
    curves = [f"curve-{name}.h5" for name in names] if pairs and pairs.curve else []
    return [name for name, made in wanted.items() if made] + curves
