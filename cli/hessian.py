"""`flatscape hessian`: top Hessian eigenvalues, trace and spectral density of a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from cli._common import (
    apply_threads,
    device_option,
    force_option,
    json_option,
    max_memory_option,
    memory_budget,
    own_loss_option,
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
from cli.outputs import OutputPlan, write_json, write_text_output
from distill.errors import DistillInputError


@click.command("hessian")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--top-k", type=int, default=1, show_default=True, help="Number of top eigenvalues (0: none)."
)
@click.option(
    "--which",
    type=click.Choice(["largest", "smallest"]),
    default="largest",
    show_default=True,
    help="Largest or smallest algebraic eigenvalues (lanczos).",
)
@click.option("--trace", "trace", is_flag=True, help="Estimate the Hessian trace.")
@click.option(
    "--trace-method",
    type=click.Choice(["hutchpp", "hutchinson"]),
    default="hutchpp",
    show_default=True,
    help="Trace estimator (the pyhessian engine uses its own).",
)
@click.option(
    "--trace-matvecs",
    type=int,
    default=99,
    show_default=True,
    help="Hessian-vector products the trace estimate spends.",
)
@click.option("--density", is_flag=True, help="Spectral density by stochastic Lanczos quadrature.")
@click.option(
    "--density-steps", type=int, default=100, show_default=True, help="Lanczos steps per SLQ probe."
)
@click.option("--density-probes", type=int, default=1, show_default=True, help="SLQ probes.")
@train_samples_option
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Examples per batch, each gradient graph rebuilt for every product (bounds "
    "memory) [default: on a CPU batches of 256, on a GPU one batch, every gradient graph "
    "built once and reused by every product].",
)
@max_memory_option(
    "the kept gradient graphs (GGN: linearizations)",
    "Batches beyond it are rebuilt for "
    "every product; the JSON report records the budget, the graph bytes, the examples kept "
    "and the peak.",
)
@click.option(
    "--engine",
    type=click.Choice(["lanczos", "power", "pyhessian"]),
    default="lanczos",
    show_default=True,
    help="Eigen solver: Lanczos, PyHessian's power iteration, or the pyhessian "
    "package itself (also for trace and density).",
)
@click.option(
    "--hvp",
    type=click.Choice(["auto", "double-backward", "forward-over-reverse"]),
    default=None,
    help="Hessian-vector product engine [default: double-backward on cpu, auto on cuda].",
)
@click.option(
    "--tol",
    type=float,
    default=1e-3,
    show_default=True,
    help="Relative eigenvalue tolerance. lanczos: every residual <= tol * |eigenvalue|, "
    "which bounds the relative error; power and pyhessian: relative change between "
    "iterations (PyHessian's rule, no bound).",
)
@click.option(
    "--max-matvecs",
    type=int,
    default=None,
    help="Product budget of the eigensolver [default: lanczos max(100, 20 k), power 100 k].",
)
@click.option(
    "--block-size",
    type=int,
    default=1,
    show_default=True,
    help="Vectors per batched Hessian-vector product.",
)
@click.option(
    "--bn-mode",
    type=click.Choice(["eval", "train"]),
    default="eval",
    show_default=True,
    help="BatchNorm running statistics (eval) or batch statistics.",
)
@click.option(
    "--operator",
    type=click.Choice(["hessian", "ggn", "fisher", "empirical-fisher"]),
    default="hessian",
    show_default=True,
    help="Curvature matrix: the Hessian; its generalized Gauss-Newton part (J^T H_out J; "
    "softmax covariance for cross-entropy), which is PSD; the Monte-Carlo Fisher (labels "
    "drawn from the model, --mc-samples per example; cross-entropy or mse), which tends "
    "to the GGN; or the empirical Fisher (outer products of the per-prediction gradients "
    "with the data's labels, any loss: per example for (N, C) outputs).",
)
@click.option(
    "--mc-samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Labels drawn per example for --operator fisher (seeded by --seed).",
)
@click.option("--float64", "float64", is_flag=True, help="Compute in float64 (about 2x slower).")
@seed_option("the random vectors")
@parameter_options
@click.option(
    "--per-layer",
    is_flag=True,
    help="Also each module's diagonal block (its own parameters, the rest fixed): the same "
    "eigenvalues and trace per module, on the same data and graphs (one full product per "
    "block product). Printed, and under per_layer in the JSON.",
)
@click.option(
    "--per-layer-table",
    type=click.Path(dir_okay=False),
    help="Write the per-layer table here (.md Markdown or .csv); implies --per-layer.",
)
@click.option(
    "--per-layer-plot",
    type=click.Path(dir_okay=False),
    help="Bar chart of each module's lambda_1 and trace (.png, .pdf); implies --per-layer.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=2),
    help="Also measure on R subsets of the whole train split (disjoint, from a permutation "
    "seeded by --seed): each value, their mean and standard deviation, under resampling "
    "in the JSON: how much of the number is the sample it was measured on.",
)
@click.option(
    "--resample-size",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Examples per subset of --resamples.",
)
@click.option("--bootstrap", is_flag=True, help="Draw the --resamples subsets with replacement.")
@own_loss_option
@source_options
@json_option("the JSON report", stdout=True)
@force_option
@quiet_option
@device_option
@threads_option
def hessian_command(
    checkpoint, top_k, which, trace, trace_method, trace_matvecs, density, density_steps,
    density_probes, samples, batch_size, max_memory, engine, hvp, tol, max_matvecs, block_size,
    bn_mode, operator, mc_samples, float64, seed, params, exclude, per_layer, per_layer_table,
    per_layer_plot, resamples, resample_size, bootstrap, loss_spec, json_path, force, quiet,
    device, threads, **options,
):  # fmt: skip
    """Top Hessian eigenvalues, trace and spectral density of a checkpoint's train loss.

    The Hessian is that of the mean loss (--loss, default cross-entropy) over the first
    --samples examples of the checkpoint's train split, in dataset order, without
    augmentation, with the model in eval mode. With --operator ggn the same solvers
    measure the generalized Gauss-Newton matrix instead (docs/sharpness.md).

    \b
    Example:
      flatscape hessian runs/teacher.safetensors --top-k 3 --trace --json runs/teacher.hessian.json
      flatscape hessian runs/teacher.safetensors --operator ggn --top-k 3
      flatscape hessian last.ckpt --model mynet.py:Net --data-file data.npz --loss mse
    """
    from cli.study.curvature import CurvatureSettings, checkpoint_curvature
    from landscape.curvature.measure import CurvatureRequest
    from landscape.curvature.report import format_summary
    from landscape.distributed import process as distributed

    sources = sources_from(options)
    json_out, table_out, plot_out = _outputs(OutputPlan(force), json_path, per_layer_table,
                                             per_layer_plot, checkpoint, sources)  # fmt: skip
    per_layer = per_layer or table_out is not None or plot_out is not None
    _check_per_layer(per_layer, top_k, trace, engine)
    apply_threads(threads)
    torch_device = distributed.init_from_env(resolve_device(device))  # torchrun: join the job
    request = CurvatureRequest(
        top_k=top_k, which=which, engine=engine, tol=tol, max_matvecs=max_matvecs,
        trace=trace, trace_method=trace_method, trace_matvecs=trace_matvecs, density=density,
        density_steps=density_steps, density_probes=density_probes, seed=seed,
        block_size=block_size,
    )  # fmt: skip
    request.check()
    settings = CurvatureSettings(
        operator=operator, samples=samples, batch_size=batch_size,
        max_memory=memory_budget(max_memory), hvp=hvp, bn_mode=bn_mode, mc_samples=mc_samples,
        float64=float64, params=parameter_filter(params, exclude), per_layer=per_layer,
        resamples=resamples, resample_size=resample_size, bootstrap=bootstrap,
    )  # fmt: skip
    report = checkpoint_curvature(checkpoint, request, settings, loss_spec, sources,
                                  torch_device, quiet)  # fmt: skip
    if report is None:  # another process of a torchrun job: the first one writes
        return
    write_json(json_out, report)
    if table_out is not None:
        _write_table(table_out, report["per_layer"])
    if plot_out is not None:
        from landscape.curvature.per_layer import plot_per_layer

        plot_per_layer({Path(checkpoint).stem: report["per_layer"]}, plot_out)
    click.echo(format_summary(report), err=str(json_path) == "-")


def _check_per_layer(per_layer: bool, top_k: int, trace: bool, engine: str) -> None:
    if per_layer and not top_k and not trace:
        raise DistillInputError("--per-layer measures --top-k or --trace per module; ask one")
    if per_layer and engine == "pyhessian":
        raise DistillInputError("--per-layer runs lanczos or power; drop --engine pyhessian")


def _outputs(plan: OutputPlan, json_path, table: str | None, plot: str | None, checkpoint,
             sources) -> tuple:  # fmt: skip
    """``--json``, ``--per-layer-table`` and ``--per-layer-plot``, checked as a plan."""
    json_out = plan.file("--json", json_path)
    table_out = plan.file("--per-layer-table", table)
    plot_out = plan.file("--per-layer-plot", plot)
    if table_out is not None and table_out.suffix not in (".md", ".csv"):
        raise DistillInputError(f"--per-layer-table {table_out}: end it in .md or .csv")
    if plot_out is not None and plot_out.suffix not in (".png", ".pdf", ".svg"):
        raise DistillInputError(f"--per-layer-plot {plot_out}: end it in .png, .pdf or .svg")
    plan.read_checkpoints("CHECKPOINT", checkpoint)
    plan.read_sources(sources)
    plan.check()
    return json_out, table_out, plot_out


def _write_table(path, rows) -> None:
    from landscape.compare.table import to_csv, to_markdown
    from landscape.curvature.report import per_layer_columns, per_layer_table

    table = per_layer_table(rows)
    render = to_csv if path.suffix == ".csv" else to_markdown
    write_text_output(path, render(table, per_layer_columns(rows)))
