"""The JSON curvature report and its short human summary, both from one CurvatureResult."""

from __future__ import annotations

from typing import Any

from landscape.curvature.measure import CurvatureRequest, CurvatureResult
from landscape.operators.double_backward import ATTENTION
from landscape.operators.memory import format_size

SCHEMA = 1


def curvature_report(
    result: CurvatureResult,
    request: CurvatureRequest,
    *,
    checkpoint: str | None = None,
    checkpoint_sha256: str | None = None,
    data: dict[str, Any] | None = None,
    bn_mode: str = "eval",
) -> dict[str, Any]:
    """The report of ``flatscape hessian --json`` (design.md lists the required fields).

    Args:
        result: What :func:`~landscape.curvature.measure.measure_curvature` returned.
        request: What was asked for (method, tolerance, seed, ...).
        checkpoint: Path of the checkpoint measured.
        checkpoint_sha256: Its file hash.
        data: ``{"dataset", "split", "samples", ...}``: which examples were used.
        bn_mode: BatchNorm mode the Hessian was taken in.
    """
    eigen, trace, density = result.eigen, result.trace, result.density
    return {
        "schema": SCHEMA,
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "data": {**(data or {}), "samples": result.examples},
        "engine": request.engine,
        "hvp": result.hvp,
        "attention": ATTENTION,
        "dtype": str(result.dtype).removeprefix("torch."),
        "bn_mode": bn_mode,
        "parameters": result.dim,
        "loss": result.loss,
        "seed": request.seed,
        "tol": request.tol,
        "which": request.which,
        "eigenvalues": [] if eigen is None else eigen.eigenvalues.tolist(),
        "residuals": [] if eigen is None else eigen.residuals.tolist(),
        "eigen_matvecs": 0 if eigen is None else eigen.matvecs,
        "converged": None if eigen is None else eigen.converged,
        "trace": None
        if trace is None
        else {
            "estimate": trace.estimate,
            "stderr": trace.stderr,
            "method": trace.method,
            "matvecs": trace.matvecs,
        },
        "density": None
        if density is None
        else {
            "nodes": density.nodes.tolist(),
            "weights": density.weights.tolist(),
            "matvecs": density.matvecs,
        },
        "matvecs": result.matvecs,
        "seconds": result.seconds,
        "memory": result.memory,
        "per_layer": result.per_layer,
    }


def format_summary(report: dict[str, Any]) -> str:
    """A few aligned lines for the terminal, from a report built by :func:`curvature_report`."""
    data = report["data"]
    lines = [
        f"{report['checkpoint'] or 'model'}: {report['parameters']:,} parameters, "
        f"{data['samples']} examples of {data.get('dataset', '?')}/{data.get('split', '?')}, "
        f"mean loss {report['loss']:.6g}",
        f"engine {report['engine']} (hvp {report['hvp']}, {report['dtype']}, "
        f"BatchNorm {report['bn_mode']})",
    ]
    if report["eigenvalues"]:
        lines.append(f"{'#':>3}  {'eigenvalue':>14}  {'residual':>10}")
        for i, (value, residual) in enumerate(
            zip(report["eigenvalues"], report["residuals"], strict=True), start=1
        ):
            lines.append(f"{i:>3}  {value:>14.6g}  {residual:>10.2e}")
        if not report["converged"]:
            lines.append(f"warning: not converged to tol {report['tol']:g} within the budget")
    if report["trace"]:
        trace = report["trace"]
        lines.append(
            f"trace {trace['estimate']:.6g} +- {trace['stderr']:.2g} "
            f"({trace['method']}, {trace['matvecs']} HVPs)"
        )
    if report["density"]:
        nodes = report["density"]["nodes"]
        lines.append(
            f"density: {len(nodes)} SLQ probe(s) x {len(nodes[0])} nodes "
            f"({report['density']['matvecs']} HVPs)"
        )
    if report.get("per_layer"):
        lines.extend(per_layer_lines(report["per_layer"]))
    if report.get("resampling"):
        lines.extend(resampling_lines(report["resampling"]))
    products = {"ggn": "GGN", "fisher": "Fisher", "empirical-fisher": "empirical Fisher"}
    matrix = products.get(report.get("operator", "hessian"), "Hessian")
    lines.append(f"{report['matvecs']} {matrix}-vector products, {report['seconds']:.2f} s")
    memory = report.get("memory") or {}
    if memory.get("kept_examples") is not None:
        size = {key: format_size(value or 0) for key, value in memory.items()}
        budget = "no limit" if memory["budget"] is None else f"{size['budget']} budget"
        lines.append(
            f"gradient graphs of {memory['kept_examples']} of {data['samples']} examples kept "
            f"({size['graph_bytes']}, {budget}), peak memory {size['peak']}"
        )
    return "\n".join(lines)


PER_LAYER_COLUMNS = ("module", "size", "lambda_1", "trace", "trace_stderr", "trace_share")


def per_layer_columns(rows: list[dict[str, Any]]) -> list[str]:
    """:data:`PER_LAYER_COLUMNS`, and ``part`` for a transformer's rows."""
    return [*PER_LAYER_COLUMNS, *(["part"] if any(r.get("part") for r in rows) else [])]


def per_layer_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-layer rows as a table: lambda_1, trace and share of the sum per module.

    A transformer's rows also give the module's ``part`` (:func:`per_part_table`).
    """
    total = sum(r["trace"] for r in rows if r["trace"] is not None)
    return [
        {
            "module": r["module"],
            "size": r["size"],
            "lambda_1": r["eigenvalues"][0] if r["eigenvalues"] else None,
            "trace": r["trace"],
            "trace_stderr": r["trace_stderr"],
            "trace_share": None if r["trace"] is None or not total else r["trace"] / total,
            **({"part": r["part"]} if r.get("part") else {}),
        }
        for r in rows
    ]


def per_part_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A transformer's per-layer traces summed by block and part (exact: a trace adds up).

    One row per block (``""``: outside the blocks) and part, in model order: ``block``,
    ``part``, ``size``, ``trace`` and ``trace_share``; empty for rows without parts.
    """
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r.get("part") is None or r["trace"] is None:
            continue
        group = grouped.setdefault((r["block"], r["part"]), {"size": 0, "trace": 0.0})
        group["size"] += r["size"]
        group["trace"] += r["trace"]
    total = sum(g["trace"] for g in grouped.values())
    return [
        {"block": block or "(outside blocks)", "part": part, **g,
         "trace_share": g["trace"] / total if total else None}
        for (block, part), g in grouped.items()
    ]  # fmt: skip


def per_layer_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Aligned terminal lines of :func:`per_layer_table` (and :func:`per_part_table`)."""
    width = max(len("module"), *(len(r["module"]) for r in rows))
    parts = any(r.get("part") for r in rows)
    head = f"{'module':<{width}}  {'params':>8}  {'lambda_1':>10}  {'trace':>10}  {'share':>6}"
    lines = [head + ("  part" if parts else "")]
    for r in per_layer_table(rows):
        value = "" if r["lambda_1"] is None else f"{r['lambda_1']:.5g}"
        lines.append(
            f"{r['module']:<{width}}  {r['size']:>8,}  {value:>10}  {_trace(r):>10}  "
            f"{_share(r):>6}" + (f"  {r['part']}" if parts else "")
        )
    by_part = per_part_table(rows)
    if by_part:
        width = max(len("block"), *(len(g["block"]) for g in by_part))
        lines.append(f"{'block':<{width}}  {'part':<9}  {'params':>8}  {'trace':>10}  share")
        lines += [f"{g['block']:<{width}}  {g['part']:<9}  {g['size']:>8,}  {_trace(g):>10}  "
                  f"{_share(g):>6}" for g in by_part]  # fmt: skip
    return lines


def _trace(row: dict[str, Any]) -> str:
    return "" if row["trace"] is None else f"{row['trace']:.5g}"


def _share(row: dict[str, Any]) -> str:
    return "" if row["trace_share"] is None else f"{100 * row['trace_share']:.1f}%"


def resampling_lines(resampling: dict[str, Any]) -> list[str]:
    """One line per eigenvalue (and the trace) of a resampled measurement."""
    how = "bootstrap" if resampling["bootstrap"] else "disjoint"
    where = f"over {resampling['resamples']} {how} subsets of {resampling['resample_size']}"
    lines = [
        f"lambda_{i} {where}: {s['mean']:.5g} +- {s['std']:.2g} (sd; "
        f"{min(s['values']):.5g} to {max(s['values']):.5g})"
        for i, s in enumerate(resampling["eigenvalues"], start=1)
    ]
    if resampling["trace"]:
        t = resampling["trace"]
        lines.append(f"trace {where}: {t['mean']:.5g} +- {t['std']:.2g} (sd)")
    return lines
