"""A checkpoint's sharpness report: what ``flatscape sharpness`` prints and writes.

Average- and worst-case sharpness (:func:`landscape.sharpness.sharpness_report`) of a
checkpoint's train loss, in each geometry asked, for the model as it is and, with a
target loss, at the temperature that matches it
(:func:`landscape.curvature.temperature.temperature_matched_curvature`).
"""

from __future__ import annotations

import time
from typing import Any

from distill.errors import DistillInputError

DEFAULT_RHO = {"average": 0.05, "worst": 0.1}


def _target_loss(
    match_loss: float | None, match_teacher: str | None, loaded, samples: int, device, sources
):
    """The train loss to match: given, or the teacher's on the same examples, or None."""
    from distill.sources import load_for_analysis
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


def _table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [
        f"{'model':<9}{'measure':<9}{'geometry':<13}{'rho':>7}{'train loss':>12}"
        f"{'increase':>12}{'+-':>11}"
    ]
    for model, r in rows:
        error = r["stderr"] if r["stderr"] is not None else r["spread"]
        kind = "se" if r["stderr"] is not None else "sd"
        lines.append(
            f"{model:<9}{r['measure']:<9}{r['geometry']:<13}{r['rho']:>7.3g}{r['loss']:>12.6f}"
            f"{r['increase']:>12.6f}{error:>9.6f} {kind}"
        )
    return lines


def checkpoint_sharpness(
    checkpoint: str,
    measures: list[str],
    geometries: list[str],
    rho: float | None = None,
    *,
    loss_fn: Any,
    loss_record: dict[str, Any],
    loss_spec: str = "cross_entropy",
    samples: int | None = 1024,
    batch_size: int = 1024,
    draws: int = 32,
    steps: int = 20,
    restarts: int = 2,
    seed: int = 0,
    match_loss: float | None = None,
    match_teacher: str | None = None,
    max_memory: int | str | None = "auto",
    params: Any = None,
    sources: Any = None,
    device: Any = "cpu",
    quiet: bool = True,
) -> dict[str, Any]:
    """The sharpness report of one checkpoint, as ``flatscape sharpness --json`` writes it.

    ``rho`` None takes each measure's default (:data:`DEFAULT_RHO`); ``match_loss`` or
    ``match_teacher`` (that checkpoint's train loss on the same examples) adds the
    temperature-matched model. ``loss_fn`` and ``loss_record`` come from
    :func:`distill.losses.analysis_loss` of ``loss_spec``; ``params`` is a parameter
    filter; ``sources`` the models' code and data (:class:`distill.sources.Sources`).
    """
    from cli._common import progress_bar
    from distill.sources import check_loss, load_for_analysis, provenance
    from landscape.curvature.temperature import TemperatureScaled, temperature_matched_curvature
    from landscape.operators.mean_loss import select_parameters
    from landscape.sharpness import planned_evaluations

    start = time.perf_counter()
    loaded = load_for_analysis(checkpoint, samples=samples, batch_size=batch_size, device=device,
                               sources=sources)  # fmt: skip
    check_loss(loss_fn, loaded.model, loaded.batches[0], loss_spec)
    target, teacher_sha = _target_loss(match_loss, match_teacher, loaded, samples, device,
                                       sources)  # fmt: skip
    options = {"samples": draws, "steps": steps, "restarts": restarts, "seed": seed}
    memory: dict[str, Any] = {}
    models = {"raw": loaded.model}
    matched = None
    if target is not None:
        matched = temperature_matched_curvature(loaded.model, loaded.batches, target, seed=seed,
                                                params=params)  # fmt: skip
        models["matched"] = TemperatureScaled(loaded.model, matched["temperature"])
    total = len(models) * planned_evaluations(measures, geometries, draws, steps, restarts)
    results = {}
    with progress_bar(total, "sharpness", quiet, unit="pass") as bar:
        for name, model in models.items():
            results[name] = _measure(
                model, loss_fn, loaded.batches, measures, geometries, rho,
                {**options, "max_memory": max_memory, "params": params}, bar, memory,
            )  # fmt: skip
    return {
        "checkpoint": str(loaded.path),
        "checkpoint_sha256": loaded.sha256,
        "data": {"dataset": loaded.dataset_name, "split": "train", "samples": loaded.samples},
        "provenance": provenance(loaded.metadata),
        "settings": {**options, "rho": rho, "default_rho": DEFAULT_RHO, "loss": loss_spec},
        "loss_function": loss_record,
        "params": None if params is None else params.describe(),
        "parameters": sum(p.numel() for n, p in loaded.model.named_parameters()
                          if n in select_parameters(loaded.model, params)),  # fmt: skip
        "sharpness": results["raw"],
        "temperature_matched": None if matched is None else {
            **matched, "teacher_sha256": teacher_sha, "sharpness": results["matched"],
        },
        "memory": memory,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def sharpness_lines(report: dict[str, Any]) -> list[str]:
    """What ``flatscape sharpness`` prints: the examples, the matched temperature, the table."""
    lines = [f"{report['checkpoint']}: {report['data']['samples']} train examples"]
    matched = report["temperature_matched"]
    if matched is not None:
        raw, scaled = matched["raw"], matched["matched"]
        lines.append(
            f"temperature {matched['temperature']:.4f} matches train loss "
            f"{matched['fit']['target']:.6f} (raw {raw['loss']:.6f}); top Hessian eigenvalue "
            f"raw {raw['eigenvalues'][0]:.4f}, matched {scaled['eigenvalues'][0]:.4f}"
        )
    rows = [("raw", r) for r in report["sharpness"]]
    rows += [("matched", r) for r in (matched or {}).get("sharpness", [])]
    return lines + _table(rows)
