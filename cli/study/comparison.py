"""Comparing checkpoints: teacher and students measured the same way, changes vs the teacher.

:func:`compare_checkpoints` measures every model on the same examples with the same
settings (:func:`landscape.compare.profile.profile_model`), optionally per layer, on
resampled subsets, at a matched train loss and along the line from the reference;
:func:`comparison_plane` adds the plane through three of them and :func:`write_plots`
their figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import DistillInputError

if TYPE_CHECKING:  # annotations only; torch loads on first use
    from cli.study.connectivity import ConnectivityRequest
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
    from distill.sources import open_checkpoint

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


def _spread(model, loss_fn, bundle, settings, resamples, size, device,
            bootstrap=False) -> dict[str, Any]:  # fmt: skip
    """The resampled spread of one model's lambda_1 and trace."""
    from distill.sources import first_examples
    from landscape.curvature.measure import CurvatureRequest
    from landscape.curvature.resampling import resampled_curvature

    request = CurvatureRequest(
        top_k=1, tol=settings.tol, trace=settings.trace_matvecs > 0,
        trace_matvecs=max(settings.trace_matvecs, 3), seed=settings.seed,
    )  # fmt: skip
    everything = first_examples(bundle.train_eval, None, 4096, device)
    resampling = resampled_curvature(
        model, loss_fn, everything, request, resamples, size, bootstrap=bootstrap,
        seed=settings.seed, params=settings.params,
    )  # fmt: skip
    trace = resampling["trace"]
    return {"resampling": resampling, "lambda_1_sd": resampling["eigenvalues"][0]["std"],
            "trace_sd": None if trace is None else trace["std"]}  # fmt: skip


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


def checkpoint_names(paths: list[str], labels: list[str] | None = None) -> list[str]:
    """The rows' names: ``labels`` (one per checkpoint, distinct), else the file stems."""
    if labels is None:
        return [Path(path).stem for path in paths]
    if len(labels) != len(paths):
        raise DistillInputError(
            f"--labels names {len(labels)} rows for {len(paths)} checkpoints; give one per "
            "checkpoint, comma-separated"
        )
    bad = next((x for x in labels if not x or "/" in x or x.startswith(".")), None)
    if bad is not None:
        raise DistillInputError(f"--labels: {bad!r} is no name (empty, a '/' or a leading '.')")
    if len(set(labels)) != len(labels):
        twice = next(x for x in labels if labels.count(x) > 1)
        raise DistillInputError(f"--labels: {twice!r} names two rows; give distinct names")
    return list(labels)


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
    labels: list[str] | None = None,
    connectivity: ConnectivityRequest | None = None,
) -> dict[str, Any]:
    """Measure every checkpoint on the first `samples` train examples; changes vs teacher.

    With `per_layer`, each record gets ``per_layer``: lambda_1 and trace of each module's
    block (:mod:`landscape.curvature.per_layer`), on the operator the whole model was
    measured on: ``hvps`` counts the whole model's products (once), ``per_layer_hvps``
    the blocks'. With `resamples`, ``resampling``:
    lambda_1 and the trace on that many disjoint (or, with `bootstrap`, drawn with
    replacement) subsets of `resample_size` examples of the whole train split, the same
    subsets for every model, with ``lambda_1_sd``, ``trace_sd`` and, against the
    reference, ``lambda_1_change_exceeds_spread`` and ``trace_change_exceeds_spread``
    (the paired difference beyond two of its standard deviations,
    :func:`landscape.curvature.resampling.exceeds_spread`).

    With `interpolation_points`, also the loss on the straight line from the reference
    (teacher) to every other model, for alpha in [-0.5, 1.5] (each model's record gets
    ``interpolation``: x, loss, acc). ``labels`` name the rows (default: the file stems,
    :func:`checkpoint_names`). With ``connectivity``, every other model's record gets the
    pair's barriers, agreement, KL, CKA and (if asked) curve against the reference
    (:mod:`cli.study.connectivity`). ``sources`` names the models' code and data
    (:class:`distill.sources.Sources`); ``loss_fn`` is the batch-mean loss measured
    (default cross-entropy).
    """
    import torch.nn.functional as F

    loss_fn = loss_fn or F.cross_entropy

    from distill.sources import check_loss, first_examples
    from landscape.compare.profile import matched_lambda_1, profile_model
    from landscape.compare.table import with_changes

    records, data = [], []
    names = checkpoint_names(paths, labels)
    loaded = load_models(paths, device, allow_mixed, sources)
    if resamples:  # subsets that cannot be drawn are refused before anything is measured
        from landscape.curvature.resampling import subset_indices

        for _, _, _, bundle in loaded:
            subset_indices(len(bundle.train_eval), resamples, resample_size, bootstrap,
                           settings.seed)  # fmt: skip
    for name, (path, model, meta, bundle) in zip(names, loaded, strict=True):
        train = first_examples(bundle.train_eval, samples, batch_size, device)
        test = first_examples(bundle.test, None, batch_size, device)
        data.append({"train": train, "test": test})
        check_loss(loss_fn, model, train[0], loss_name)
        record = profile_model(model, loss_fn, train, settings, test_batches=test,
                               per_layer=per_layer)  # fmt: skip
        if resamples:
            record.update(_spread(model, loss_fn, bundle, settings, resamples, resample_size,
                                  device, bootstrap))  # fmt: skip
        records.append(
            {
                "name": name,
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
        _add_interpolations(records, [m for _, m, _, _ in loaded], ref, data[ref]["train"],
                            loss_fn, interpolation_points)  # fmt: skip
    if connectivity is not None:
        from cli.study.connectivity import add_connectivity

        add_connectivity(records, [m for _, m, _, _ in loaded], ref, data, loss_fn, connectivity,
                         [meta for _, _, meta, _ in loaded])  # fmt: skip
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


def _add_interpolations(records: list[dict[str, Any]], models: list, ref: int, train: list,
                        loss_fn, points: int) -> None:  # fmt: skip
    """``interpolation`` (alpha in [-0.5, 1.5]) from the reference to every other model."""
    import numpy as np

    from landscape.compare.profile import interpolation_line

    alphas = np.linspace(-0.5, 1.5, points)
    for i, model in enumerate(models):
        if i != ref:
            records[i]["interpolation"] = interpolation_line(models[ref], model, loss_fn, train,
                                                             alphas)  # fmt: skip


def comparison_plane(report: dict[str, Any], samples: int, plots_dir, points: int, device,
                     sources=None, loss_fn=None, align: bool = False) -> dict:  # fmt: skip
    """The plane through the reference and the next two models, into plots_dir or a temp dir.

    With ``align`` the two students are aligned to the reference first (weight matching).
    """
    import tempfile

    from cli.study.planes import plane_report
    from distill.sources import first_examples, open_checkpoint

    models = report["models"]
    ref = next(i for i, m in enumerate(models) if m["name"] == report["reference"])
    order = [ref] + [i for i in range(len(models)) if i != ref][:2]
    paths = [models[i]["path"] for i in order]
    bundle = open_checkpoint(paths[0], device=device, sources=sources)[2]
    batches = first_examples(bundle.train_eval, samples, 1024, device)
    named = {"sources": sources, "loss_fn": loss_fn, "align": align}
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
    from cli.study.connectivity import connectivity_lines
    from cli.study.report import save_lines

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
    pairs = connectivity_lines(report)
    if pairs:
        save_lines(pairs, folder / "connectivity.png", "t", log=False)
    if all(m.get("per_layer") for m in models):
        from landscape.curvature.per_layer import plot_per_layer

        plot_per_layer({m["name"]: m["per_layer"] for m in models}, folder / "per_layer.png")


def per_layer_text(models: list[dict[str, Any]], suffix: str) -> str:
    """Every model's per-layer rows in one table, a ``model`` column first."""
    from landscape.compare.table import to_csv, to_markdown
    from landscape.curvature.report import per_layer_columns, per_layer_table

    rows = [{"model": m["name"], **row} for m in models for row in per_layer_table(m["per_layer"])]
    render = to_csv if suffix == ".csv" else to_markdown
    every = [row for m in models for row in m["per_layer"]]
    return render(rows, ["model", *per_layer_columns(every)])


def add_plane_and_plots(report: dict[str, Any], samples: int, plots_dir: str | Path | None,
                        plane_points: int, device, sources=None, loss_fn=None,
                        align: bool = False) -> None:  # fmt: skip
    """The plane (with ``plane_points``) into ``report["plane"]``, the figures into ``plots_dir``.

    See :func:`comparison_plane` and :func:`write_plots`.
    """
    if plane_points:
        report["plane"] = comparison_plane(report, samples, plots_dir, plane_points, device,
                                           sources, loss_fn, align)  # fmt: skip
    if plots_dir:
        write_plots(report, Path(plots_dir))


def comparison_columns(confounds: bool, resampled: bool, trace: bool, pairs: bool = False,
                       curve: bool = False, aligned: bool = False) -> list[str]:  # fmt: skip
    """The table's columns: the measures, then the confounds, spreads and pair measures."""
    from cli.study.connectivity import ALIGNED_COLUMNS, CURVE_COLUMNS, PAIR_COLUMNS

    columns = list(TABLE_COLUMNS)
    if pairs:
        columns += PAIR_COLUMNS
    if aligned:
        columns += ALIGNED_COLUMNS
    if curve:
        columns += CURVE_COLUMNS
    if confounds:
        columns += CONFOUND_COLUMNS
    if resampled:
        columns += ["lambda_1_sd", "lambda_1_change_exceeds_spread"]
        if trace:
            columns += ["trace_sd", "trace_change_exceeds_spread"]
    return columns


def comparison_tables(report: dict[str, Any], confounds: bool, resampled: bool,
                      trace: bool) -> dict[str, str]:  # fmt: skip
    """The models' table as ``markdown`` and ``csv``, with :func:`comparison_columns`.

    The pair columns appear when the report has them (``compare --connectivity``).
    """
    from landscape.compare.table import to_csv, to_markdown

    models = report["models"]
    columns = comparison_columns(confounds, resampled, trace,
                                 any("barrier" in m for m in models),
                                 any("curve_max_loss" in m for m in models),
                                 any("aligned_barrier" in m for m in models))  # fmt: skip
    return {"markdown": to_markdown(report["models"], columns),
            "csv": to_csv(report["models"], columns)}  # fmt: skip


def comparison_summary(report: dict[str, Any], markdown: str, samples: int) -> str:
    """What ``flatscape compare`` prints: the table, and the plane's when there is one."""
    from cli.study.planes import plane_lines

    text = f"{samples} train examples; changes relative to {report['reference']}\n\n{markdown}"
    if "plane" in report:
        names = " -> ".join(m["name"] for m in report["plane"]["models"])
        text += f"\nThe plane through {names} ({samples} train examples):\n\n"
        text += "\n".join(plane_lines(report["plane"])) + "\n"
    return text
