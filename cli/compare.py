"""`flatscape compare`: teacher and students side by side, measured the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli._common import (
    apply_threads,
    device_option,
    force_option,
    json_option,
    loss_option,
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
from cli._outputs import OutputPlan, report_kept_on_failure, write_json, write_text_output
from distill.errors import DistillInputError

if TYPE_CHECKING:  # annotations only; the module loads inside the command
    from landscape.compare.profile import ProfileSettings

CHANGE_COLUMNS = (
    "test_accuracy", "train_loss", "lambda_1", "trace", "surface_width", "ggn_lambda_1",
    "avg_sharpness", "worst_sharpness", "matched_lambda_1",
)  # fmt: skip
CONFOUND_COLUMNS = (
    "ggn_lambda_1", "avg_sharpness", "worst_sharpness", "matched_temperature",
    "matched_lambda_1", "matched_lambda_1_change",
)  # fmt: skip
TABLE_COLUMNS = (
    "name",
    "role",
    "generation",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "lambda_1",
    "trace",
    "trace_stderr",
    "surface_width",
    "test_accuracy_change",
    "lambda_1_change",
    "trace_change",
    "surface_width_change",
)


def _identity(meta: dict[str, Any]) -> tuple:
    dataset = {k: v for k, v in meta["dataset"].items() if k not in ("normalization",)}
    return meta["arch"], meta["arch_kwargs"], dataset


def load_models(paths: list[str], device, allow_mixed: bool, sources=None):
    """Load every checkpoint, naming a missing one; refuse mixed architectures or data."""
    from distill.analysis import open_checkpoint

    for i, path in enumerate(paths, 1):
        if not Path(path).is_file():
            raise DistillInputError(f"checkpoint {i} of {len(paths)}, {path}, not found")
    loaded = [(path, *open_checkpoint(path, device=device, sources=sources)) for path in paths]
    first_path, _, first_meta, _ = loaded[0]
    for path, _, meta, _ in loaded[1:]:
        if not allow_mixed and _identity(meta) != _identity(first_meta):
            raise DistillInputError(
                f"{path} and {first_path} differ in architecture or dataset; "
                "pass --allow-mixed to compare them anyway"
            )
    return loaded


def _blocks_and_spread(model, loss_fn, train, bundle, settings, per_layer, resamples, size,
                       device, bootstrap=False) -> dict[str, Any]:  # fmt: skip
    """The per-layer rows and the resampled spread of one model, as asked."""
    from distill.analysis import first_examples
    from landscape.curvature import CurvatureRequest, model_curvature
    from landscape.curvature.resampling import resampled_curvature

    request = CurvatureRequest(
        top_k=1, tol=settings.tol, trace=settings.trace_matvecs > 0,
        trace_matvecs=max(settings.trace_matvecs, 3), seed=settings.seed,
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if per_layer:
        result = model_curvature(model, loss_fn, train, request, params=settings.params,
                                 per_layer=True)  # fmt: skip
        extra["per_layer"] = result.per_layer
    if resamples:
        everything = first_examples(bundle.train_eval, None, 4096, device)
        extra["resampling"] = resampled_curvature(
            model, loss_fn, everything, request, resamples, size, bootstrap=bootstrap,
            seed=settings.seed, params=settings.params,
        )  # fmt: skip
        extra["lambda_1_sd"] = extra["resampling"]["eigenvalues"][0]["std"]
        trace = extra["resampling"]["trace"]
        extra["trace_sd"] = None if trace is None else trace["std"]
    return extra


def _spread_verdicts(records: list[dict[str, Any]], ref: int) -> None:
    """``lambda_1_change_exceeds_spread`` and ``trace_change_exceeds_spread`` per record."""
    from landscape.curvature.resampling import exceeds_spread

    def measured(record, key):
        resampled = record["resampling"]
        return resampled["eigenvalues"][0] if key == "lambda_1" else resampled["trace"]

    for key in ("lambda_1", "trace"):
        reference = measured(records[ref], key)
        for i, record in enumerate(records):
            spread = measured(record, key)
            record[f"{key}_change_exceeds_spread"] = (
                None if i == ref or spread is None else exceeds_spread(spread, reference)
            )


def reference_index(records: list[dict[str, Any]]) -> int:
    """The teacher (generation 0) if there is one, else the first checkpoint."""
    return next((i for i, r in enumerate(records) if r.get("generation") == 0), 0)


def compare_checkpoints(
    paths: list[str],
    settings: ProfileSettings,
    samples: int,
    batch_size: int,
    device="cpu",
    allow_mixed: bool = False,
    progress=None,
    interpolation_points: int = 0,
    sources=None,
    loss_fn=None,
    per_layer: bool = False,
    resamples: int | None = None,
    resample_size: int = 512,
    loss_name: str = "cross_entropy",
    bootstrap: bool = False,
) -> dict[str, Any]:
    """Measure every checkpoint on the first `samples` train examples; changes vs teacher.

    With `per_layer`, each record gets ``per_layer``: lambda_1 and trace of each module's
    block (:mod:`landscape.curvature.per_layer`). With `resamples`, ``resampling``:
    lambda_1 and the trace on that many disjoint (or, with `bootstrap`, drawn with
    replacement) subsets of `resample_size` examples of the whole train split, the same
    subsets for every model, with ``lambda_1_sd``, ``trace_sd`` and, against the
    reference, ``lambda_1_change_exceeds_spread`` and ``trace_change_exceeds_spread``
    (the paired difference beyond two of its standard deviations,
    :func:`landscape.curvature.resampling.exceeds_spread`).

    With `interpolation_points`, also the loss on the straight line from the reference
    (teacher) to every other model, for alpha in [-0.5, 1.5] (each model's record gets
    ``interpolation``: x, loss, acc). ``sources`` names the models' code and data
    (:class:`distill.analysis.Sources`); ``loss_fn`` is the batch-mean loss measured
    (default cross-entropy).
    """
    import numpy as np
    import torch.nn.functional as F

    loss_fn = loss_fn or F.cross_entropy

    from distill.analysis import first_examples
    from distill.losses import check_loss
    from landscape.compare.profile import interpolation_line, matched_lambda_1, profile_model
    from landscape.compare.table import with_changes

    records = []
    loaded = load_models(paths, device, allow_mixed, sources)
    if resamples:  # subsets that cannot be drawn are refused before anything is measured
        from landscape.curvature.resampling import subset_indices

        for _, _, _, bundle in loaded:
            subset_indices(len(bundle.train_eval), resamples, resample_size, bootstrap,
                           settings.seed)  # fmt: skip
    for path, model, meta, bundle in loaded:
        train = first_examples(bundle.train_eval, samples, batch_size, device)
        test = first_examples(bundle.test, None, batch_size, device)
        check_loss(loss_fn, model, train[0], loss_name)
        record = profile_model(model, loss_fn, train, settings, test_batches=test)
        record.update(_blocks_and_spread(model, loss_fn, train, bundle, settings, per_layer,
                                         resamples, resample_size, device,
                                         bootstrap))  # fmt: skip
        records.append(
            {
                "name": Path(path).stem,
                "path": str(path),
                "role": meta.get("role"),
                "generation": meta.get("generation"),
                "seed": meta.get("seed"),
                **record,
            }
        )
        if progress:
            progress(1)
    ref = reference_index(records)
    if resamples:
        _spread_verdicts(records, ref)
    if settings.confounds:
        target = max(r["train_loss"] for r in records)
        for record, (_, model, _, bundle) in zip(records, loaded, strict=True):
            train = first_examples(bundle.train_eval, samples, batch_size, device)
            record.update(matched_lambda_1(model, train, target, settings))
    if interpolation_points:
        reference_model, reference_bundle = loaded[ref][1], loaded[ref][3]
        train = first_examples(reference_bundle.train_eval, samples, batch_size, device)
        alphas = np.linspace(-0.5, 1.5, interpolation_points)
        for i, (_, model, _, _) in enumerate(loaded):
            if i != ref:
                line = interpolation_line(reference_model, model, loss_fn, train, alphas)
                records[i]["interpolation"] = line
    return {
        "data": {"split": "train", "samples": samples, "test": "full test split"},
        "loss": loss_name,
        "parameters": records[0]["parameters"]
        if len({r["parameters"] for r in records}) == 1
        else None,
        "settings": records[0]["settings"],
        "reference": records[ref]["name"],
        "models": with_changes(records, CHANGE_COLUMNS, ref),
    }


def _plane(report: dict[str, Any], samples: int, plots_dir, points: int, device, sources=None,
           loss_fn=None) -> dict:  # fmt: skip
    """The plane through the reference and the next two models, into plots_dir or a temp dir."""
    import tempfile

    from cli._planes import plane_report
    from distill.analysis import first_examples, open_checkpoint

    models = report["models"]
    ref = next(i for i, m in enumerate(models) if m["name"] == report["reference"])
    order = [ref] + [i for i in range(len(models)) if i != ref][:2]
    paths = [models[i]["path"] for i in order]
    bundle = open_checkpoint(paths[0], device=device, sources=sources)[2]
    batches = first_examples(bundle.train_eval, samples, 1024, device)
    named = {"sources": sources, "loss_fn": loss_fn}
    if plots_dir:
        folder = Path(plots_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return plane_report(paths, batches, folder / "plane.h5", points, device,
                            folder / "plane.png", replace=True, **named)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        found = plane_report(paths, batches, Path(folder) / "plane.h5", points, device, **named)
    found["file"] = None
    return found


def write_plots(report: dict[str, Any], folder: Path) -> None:
    """1D curves along each model's own direction, and teacher -> student lines."""
    from cli._report import save_lines

    folder.mkdir(parents=True, exist_ok=True)
    models = report["models"]
    own = [
        {"label": m["name"], "x": m["line_x"], "loss": m["line_loss"], "acc": m["line_acc"]}
        for m in models
        if m.get("line_x")
    ]
    if own:
        save_lines(own, folder / "lines.png", "filter-normalized")
    lines = [
        {"label": f"{report['reference']} → {m['name']}", **m["interpolation"]}
        for m in models
        if m.get("interpolation")
    ]
    if lines:
        save_lines(lines, folder / "interpolation.png", "interpolation", log=False)
    if all(m.get("per_layer") for m in models):
        from landscape.curvature.per_layer import plot_per_layer

        plot_per_layer({m["name"]: m["per_layer"] for m in models}, folder / "per_layer.png")


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
@loss_option
@source_options
@json_option("the comparison")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False))
@force_option
@quiet_option
@device_option
@threads_option
def compare(
    checkpoints,
    surface,
    plane,
    plane_points,
    plots_dir,
    samples,
    batch_size,
    top_k,
    tol,
    trace_matvecs,
    line_points,
    seed,
    confounds,
    allow_mixed,
    params,
    exclude,
    per_layer,
    resamples,
    resample_size,
    bootstrap,
    per_layer_table,
    loss_spec,
    json_path,
    markdown_path,
    csv_path,
    force,
    quiet,
    device,
    threads,
    **options,
):
    """Compare checkpoints: accuracy, train loss, top eigenvalues, trace, basin width.

    All models are measured on the same data with the same settings; changes are
    relative to the teacher (generation 0) or else the first checkpoint. Train loss is
    printed beside every sharpness number: a saturated softmax looks flat.

    \b
    Example:
      flatscape compare runs/teacher.safetensors runs/sd/gen1.safetensors \\
          runs/sd/gen2.safetensors --markdown cmp.md --json cmp.json
    """
    from distill.losses import analysis_loss
    from landscape.compare.profile import ProfileSettings
    from landscape.compare.table import to_csv, to_markdown

    apply_threads(threads)
    loss_fn, loss_record = analysis_loss(loss_spec)
    if confounds and loss_spec != "cross_entropy":
        raise DistillInputError("--confounds match a cross-entropy by temperature; drop --loss")
    per_layer = per_layer or per_layer_table is not None
    _check_requests(bootstrap, resamples, plane, len(checkpoints))
    sources = sources_from(options)
    outputs = _outputs(
        OutputPlan(force), (json_path, markdown_path, csv_path, per_layer_table), plots_dir,
        _plot_names(plane, line_points, surface, per_layer), checkpoints, sources,
    )  # fmt: skip
    settings = ProfileSettings(
        top_k=top_k,
        tol=tol,
        trace_matvecs=trace_matvecs,
        line_points=line_points,
        seed=seed,
        confounds=confounds,
        params=parameter_filter(params, exclude),
    )
    with progress_bar(len(checkpoints), "models", quiet, unit="model") as bar:
        report = compare_checkpoints(
            list(checkpoints),
            settings,
            samples,
            batch_size,
            resolve_device(device),
            allow_mixed,
            progress=bar.update,
            interpolation_points=41 if surface else 0,
            sources=sources,
            loss_fn=loss_fn,
            per_layer=per_layer,
            resamples=resamples,
            resample_size=resample_size,
            loss_name=loss_spec,
            bootstrap=bootstrap,
        )
    report["loss_function"] = loss_record
    with report_kept_on_failure(report):  # a full disk must not lose the measurements
        if plane:
            report["plane"] = _plane(report, samples, plots_dir, plane_points,
                                     resolve_device(device), sources, loss_fn)  # fmt: skip
        if plots_dir:
            write_plots(report, Path(plots_dir))
    rows, columns = report["models"], list(TABLE_COLUMNS)
    if confounds:
        columns += CONFOUND_COLUMNS
    if resamples:
        columns += ["lambda_1_sd", "lambda_1_change_exceeds_spread"]
        if trace_matvecs:
            columns += ["trace_sd", "trace_change_exceeds_spread"]
    markdown = to_markdown(rows, columns)
    click.echo(f"{samples} train examples; changes relative to {report['reference']}\n")
    click.echo(markdown, nl=False)
    if plane:
        from cli._planes import plane_lines

        names = " -> ".join(m["name"] for m in report["plane"]["models"])
        click.echo(f"\nThe plane through {names} ({samples} train examples):\n")
        click.echo("\n".join(plane_lines(report["plane"])))
    write_json(outputs[0], report)
    with report_kept_on_failure(report):
        write_text_output(outputs[1], markdown)
        write_text_output(outputs[2], to_csv(rows, columns))
        if outputs[3] is not None:
            write_text_output(outputs[3], _per_layer_text(rows, outputs[3].suffix))


def _check_requests(bootstrap: bool, resamples: int | None, plane: bool, models: int) -> None:
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


def _plot_names(plane: bool, line_points: int, surface: bool, per_layer: bool) -> list[str]:
    """The files ``--plots`` writes with these options."""
    wanted = {"plane.h5": plane, "plane.png": plane, "lines.png": line_points > 0,
              "interpolation.png": surface, "per_layer.png": per_layer}  # fmt: skip
    return [name for name, made in wanted.items() if made]


def _per_layer_text(models: list[dict[str, Any]], suffix: str) -> str:
    """Every model's per-layer rows in one table, a ``model`` column first."""
    from landscape.compare.table import to_csv, to_markdown
    from landscape.curvature.report import PER_LAYER_COLUMNS, per_layer_table

    rows = [{"model": m["name"], **row} for m in models for row in per_layer_table(m["per_layer"])]
    render = to_csv if suffix == ".csv" else to_markdown
    return render(rows, ["model", *PER_LAYER_COLUMNS])
