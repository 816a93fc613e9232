"""All sharpness measures of one model in one call: what the CLI and the results table use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.errors import LandscapeInputError
from landscape.operators.mean_loss import ParameterSelection
from landscape.operators.memory import peak_bytes, resolve_budget
from landscape.sharpness.average import average_sharpness
from landscape.sharpness.geometry import GEOMETRIES
from landscape.sharpness.objective import PerturbedLoss
from landscape.sharpness.worst import worst_sharpness

MEASURES = ("average", "worst")


def _check_choices(given: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    given = list(given)
    unknown = [g for g in given if g not in allowed]
    if unknown or not given:
        raise LandscapeInputError(
            f"{what} {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(allowed)}"
        )
    return given


def planned_evaluations(
    measures: Sequence[str], geometries: Sequence[str], samples: int, steps: int, restarts: int
) -> int:
    """Passes over the data :func:`sharpness_report` makes after the unperturbed loss."""
    per_geometry = {"average": 2 * samples, "worst": restarts * (steps + 1)}
    return len(geometries) * sum(per_geometry[m] for m in measures)


@in_analysis_mode
def sharpness_report(
    model: nn.Module,
    loss_fn: LossFunction,
    batches: Iterable[Batch],
    rho: float,
    measures: Sequence[str] = MEASURES,
    geometries: Sequence[str] = GEOMETRIES,
    samples: int = 32,
    steps: int = 20,
    restarts: int = 2,
    seed: int = 0,
    eta: float = 0.0,
    params: ParameterSelection = None,
    dtype: torch.dtype | None = None,
    bn_mode: str = "eval",
    progress: Callable[[int], object] | None = None,
    max_memory: int | str | None = "auto",
) -> dict[str, Any]:
    """Average- and worst-case sharpness in each geometry, beside the unperturbed loss.

    Every measure uses the same seed, hence the same random directions in every
    geometry (common random numbers), so differences between geometries and between
    models measured with the same options are not Monte-Carlo noise in the draws.

    Args:
        model: Any module (left untouched).
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's mean loss.
        batches: The measured data, e.g. the first 1024 training examples.
        rho: Radius of the ball in each geometry's normalized coordinates.
        measures: Any of ``"average"``, ``"worst"``.
        geometries: Any of ``"plain"``, ``"elementwise"``, ``"filterwise"``.
        samples: Draws for average-case sharpness.
        steps: Ascent steps per restart for worst-case sharpness.
        restarts: Random restarts for worst-case sharpness.
        seed: Seed of draws and restarts.
        eta: Offset added to adaptive scales.
        params: The parameters to perturb: names, globs or a
            :class:`~landscape.operators.mean_loss.ParameterFilter` (default: all
            trainable); the others are held fixed.
        dtype: Compute dtype (default: the model's).
        bn_mode: ``"eval"`` or ``"train"``.
        progress: Called with the number of passes over the data after each one; the
            total is :func:`planned_evaluations`.
        max_memory: Bytes one batch's gradient graph may take: ``"auto"`` (half the
            memory available at the start), None (no limit) or bytes for the whole
            process (:class:`~landscape.sharpness.objective.PerturbedLoss`).

    Returns:
        ``{"loss", "examples", "rho", "results": [SharpnessResult.to_dict(), ...],
        "memory": {"budget", "graph_bytes", "peak"}, "parameters", "parameter_names"}``,
        one result per (measure, geometry), measures outermost; ``graph_bytes`` is the
        largest batch's gradient graph (measured under a budget, else None);
        ``parameters`` counts the perturbed scalars.
    """
    measures = _check_choices(measures, MEASURES, "measure")
    geometries = _check_choices(geometries, GEOMETRIES, "geometry")
    device = next(model.parameters()).device
    budget = resolve_budget(max_memory, device)
    objective = PerturbedLoss(model, loss_fn, batches, params, dtype, bn_mode, budget)
    objective.progress = progress
    results = []
    for measure in measures:
        for geometry in geometries:
            if measure == "average":
                result = average_sharpness(objective, rho, geometry, samples, seed, eta)
            else:
                result = worst_sharpness(
                    objective, rho, geometry, steps, restarts, seed=seed, eta=eta
                )
            results.append(result.to_dict())
    examples = sum(int(b[1].shape[0]) for b in objective.batches)
    graph = objective.budget.per_example * objective.budget.largest if budget else None
    memory = {"budget": budget, "graph_bytes": graph, "peak": peak_bytes(device)}
    parameters = sum(objective.weights[n].numel() for n in objective.names)
    return {
        "loss": objective.loss, "examples": examples, "rho": rho, "results": results,
        "memory": memory, "parameters": parameters, "parameter_names": objective.names,
    }  # fmt: skip
