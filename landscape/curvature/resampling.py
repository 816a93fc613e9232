"""How much a curvature estimate moves with the data it is measured on.

A top eigenvalue or a trace is measured on a sample of the training set (the first 1024
examples, say); another sample gives another number. :func:`resampled_curvature` repeats
the measurement on ``resamples`` subsets of ``resample_size`` examples, disjoint (a seeded
permutation cut into consecutive pieces) or bootstrap (drawn with replacement), and
reports each value with their mean and standard deviation. Two models measured on the
same subsets (the same ``seed``) differ by more than the data's spread only if their
difference exceeds it (:func:`exceeds_spread`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from landscape._types import Batch, LossFunction, in_analysis_mode
from landscape.curvature.measure import CurvatureRequest
from landscape.curvature.model import model_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.batching import gather_examples, index_examples


def subset_indices(
    total: int, resamples: int, size: int, bootstrap: bool, seed: int
) -> list[torch.Tensor]:
    """Indices of each subset: disjoint pieces of one permutation, or bootstrap draws.

    Raises:
        LandscapeInputError: fewer than 2 subsets, an empty subset, or disjoint subsets
            that need more examples than there are.
    """
    if resamples < 2:
        raise LandscapeInputError(f"resamples {resamples}: need at least 2 for a spread")
    if size < 1:
        raise LandscapeInputError(f"resample_size {size}: must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    if bootstrap:
        if size > total:
            raise LandscapeInputError(
                f"resample_size {size}: larger than the {total} examples drawn from"
            )
        return [torch.randint(0, total, (size,), generator=generator) for _ in range(resamples)]
    if resamples * size > total:
        raise LandscapeInputError(
            f"resamples {resamples} x resample_size {size} = {resamples * size} disjoint "
            f"examples, but the data has {total}; lower either, or pass bootstrap"
        )
    order = torch.randperm(total, generator=generator)
    return [order[r * size : (r + 1) * size] for r in range(resamples)]


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values),
        "values": values,
    }


@in_analysis_mode
def resampled_curvature(
    model: nn.Module,
    loss_fn: LossFunction,
    data: Iterable[Batch],
    request: CurvatureRequest,
    resamples: int,
    resample_size: int,
    bootstrap: bool = False,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """The request's eigenvalues and trace on each subset, with their mean and spread.

    Args:
        model: Any module (left unchanged).
        loss_fn: The batch's mean loss.
        data: The examples the subsets are drawn from (all of them are gathered).
        request: What to measure on each subset; subset ``r`` uses the random vectors
            of ``request.seed + r``.
        resamples: Number of subsets (at least 2).
        resample_size: Examples per subset.
        bootstrap: Draw with replacement instead of disjoint subsets.
        seed: Seed of the subsets (the same seed gives two models the same subsets).
        **options: Passed to ``model_curvature`` (``params``, ``operator``, ``max_memory``).

    Returns:
        ``{"resamples", "resample_size", "bootstrap", "seed", "examples", "eigenvalues":
        [{"mean", "std", "values"}, ...] (one per k), "trace": {...} or None,
        "probe_seeds"}``; ``std`` is the sample standard deviation over the subsets.
    """
    inputs, targets = gather_examples(data, None)
    total = int(targets.shape[0])
    subsets = subset_indices(total, resamples, resample_size, bootstrap, seed)
    eigenvalues, traces, seeds = [], [], []
    for r, index in enumerate(subsets):
        index = index.to(targets.device)
        batch = [(index_examples(inputs, index), targets[index])]
        probes = replace(request, seed=request.seed + r)
        result = model_curvature(model, loss_fn, batch, probes, **options)
        eigenvalues.append(result.eigenvalues)
        traces.append(None if result.trace is None else float(result.trace.estimate))
        seeds.append(request.seed + r)
    k = min(len(values) for values in eigenvalues)
    return {
        "resamples": resamples,
        "resample_size": resample_size,
        "bootstrap": bootstrap,
        "seed": seed,
        "examples": total,
        "eigenvalues": [_spread([values[i] for values in eigenvalues]) for i in range(k)],
        "trace": None if traces[0] is None else _spread(traces),
        "probe_seeds": seeds,
    }


def exceeds_spread(a: dict[str, Any], b: dict[str, Any], z: float = 2.0) -> bool:
    r"""Whether model ``a`` and model ``b`` differ by more than the data moves the difference.

    ``a`` and ``b`` are ``{"mean", "std", "values"}`` of two models on the *same* subsets
    (one ``seed``): with the paired differences :math:`d_r = a_r - b_r`, true when
    :math:`|\bar d| > z \, \mathrm{sd}(d)`, i.e. the difference is larger than ``z``
    standard deviations of what one subset of this size would show. (It is stricter than
    a test of the mean, whose standard error is :math:`\mathrm{sd}(d)/\sqrt{R}`.)
    """
    if len(a["values"]) != len(b["values"]):
        raise LandscapeInputError("compare resampled values over the same subsets")
    d = [x - y for x, y in zip(a["values"], b["values"], strict=True)]
    return abs(statistics.fmean(d)) > z * statistics.stdev(d)
