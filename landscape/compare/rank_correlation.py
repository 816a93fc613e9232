r"""Kendall's tau between a measure and a target: a bootstrap interval, and granulated tau.

Does a flatness measure rank runs as their generalization does? Kendall's
:math:`\tau_b` answers with a rank correlation in :math:`[-1, 1]` (ties counted as in
``scipy.stats.kendalltau``, which computes it). Its percentile bootstrap interval resamples
runs, or whole clusters of runs (e.g. the students of one teacher, which are not
independent). The granulated tau of Jiang et al. 2019 (*Fantastic generalization measures
and where to find them*, eq. 4) averages, over hyper-parameters, the mean tau within the
groups of runs where only that hyper-parameter varies:

.. math::

    \psi_i = \frac{1}{m_i} \sum_{\text{groups } g \text{ of } i} \tau(g), \qquad
    \Psi = \frac{1}{k} \sum_{i=1}^{k} \psi_i .
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from landscape.errors import LandscapeInputError

MIN_PAIRS = 3
"""Fewest complete (measure, target) pairs a tau over runs is computed on."""


@dataclass(frozen=True)
class TauResult:
    """Kendall's tau-b of ``n`` complete pairs with its percentile bootstrap interval.

    Attributes:
        n: Complete pairs (both values finite); the others were left out.
        tau: Kendall's tau-b, or None when undefined (see ``note``).
        p_value: scipy's two-sided p-value of tau = 0 (it assumes independent runs).
        ci_low, ci_high: The bootstrap percentile interval at ``confidence``.
        confidence: The interval's nominal coverage.
        resamples: Bootstrap resamples on which tau was defined (of those drawn).
        note: Why a number is missing, in words; None when all are there.
    """

    n: int
    tau: float | None
    p_value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95
    resamples: int = 0
    note: str | None = None


def finite_pairs(
    x: Sequence[float | None], y: Sequence[float | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` and ``y`` where both are finite numbers, and the kept positions."""
    if len(x) != len(y):
        raise LandscapeInputError(
            f"paired values of two lengths ({len(x)} and {len(y)}): give one value per pair"
        )

    def finite(v: Any) -> bool:
        return v is not None and math.isfinite(v)

    kept = np.array([finite(a) and finite(b) for a, b in zip(x, y, strict=True)], dtype=bool)
    xs = np.array([float(a) for a, k in zip(x, kept, strict=True) if k], dtype=np.float64)
    ys = np.array([float(b) for b, k in zip(y, kept, strict=True) if k], dtype=np.float64)
    return xs, ys, kept


def kendall_tau(
    x: Sequence[float | None], y: Sequence[float | None], minimum: int = MIN_PAIRS
) -> tuple[float | None, float | None, str | None]:
    """Kendall's tau-b and its p-value over the complete pairs, or None and the reason.

    Args:
        x: The measure's values; a pair with a None, NaN or infinite value is left out.
        y: The target's values, paired with ``x``.
        minimum: Fewest complete pairs to compute on.

    Returns:
        ``(tau, p_value, note)``: ``note`` says why tau is None (too few pairs, or one
        side constant, where tau-b is 0/0).
    """
    xs, ys, _ = finite_pairs(x, y)
    if len(xs) < minimum:
        return None, None, f"fewer than {minimum} complete pairs (n={len(xs)})"
    for values, side in ((xs, "the measure"), (ys, "the target")):
        if np.all(values == values[0]):
            return None, None, f"{side} is constant over the {len(xs)} pairs"
    result = stats.kendalltau(xs, ys)
    return float(result.statistic), float(result.pvalue), None


def tau_with_interval(
    x: Sequence[float | None],
    y: Sequence[float | None],
    clusters: Sequence[Hashable] | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TauResult:
    """Kendall's tau-b of ``x`` against ``y`` with a seeded percentile bootstrap interval.

    Args:
        x: The measure's values (a pair with a missing or non-finite value is left out).
        y: The target's values, paired with ``x``.
        clusters: A label per pair; the bootstrap then resamples whole clusters with
            replacement (pairs sharing a label are not independent). None: single pairs.
        resamples: Bootstrap resamples drawn; those where tau is undefined (a constant
            side) are dropped and ``resamples`` in the result counts the others.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling (``numpy.random.default_rng``).
    """
    if not 0 < confidence < 1:
        raise LandscapeInputError(f"confidence {confidence}: give a number in (0, 1)")
    tau, p_value, note = kendall_tau(x, y)
    xs, ys, kept = finite_pairs(x, y)
    if tau is None:
        return TauResult(len(xs), None, None, confidence=confidence, note=note)
    if clusters is not None and len(clusters) != len(x):
        raise LandscapeInputError(
            f"{len(clusters)} cluster labels for {len(x)} pairs: give one label per pair"
        )
    labels = list(range(len(xs))) if clusters is None else [
        c for c, k in zip(clusters, kept, strict=True) if k
    ]  # fmt: skip
    taus = _bootstrap_taus(xs, ys, labels, resamples, seed)
    if len(taus) == 0:
        return TauResult(len(xs), tau, p_value, confidence=confidence,
                         note="tau is undefined on every bootstrap resample")  # fmt: skip
    low, high = np.quantile(taus, [(1 - confidence) / 2, (1 + confidence) / 2])
    return TauResult(len(xs), tau, p_value, float(low), float(high), confidence, len(taus))


def _bootstrap_taus(
    xs: np.ndarray, ys: np.ndarray, labels: Sequence[Hashable], resamples: int, seed: int
) -> np.ndarray:
    """Tau on each resample of the clusters (with replacement), where it is defined."""
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    groups = [np.array(m) for m in members.values()]
    rng = np.random.default_rng(seed)
    taus = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant resample: dropped below
        for _ in range(resamples):
            chosen = rng.integers(len(groups), size=len(groups))
            index = np.concatenate([groups[c] for c in chosen])
            a, b = xs[index], ys[index]
            if np.all(a == a[0]) or np.all(b == b[0]):
                continue
            taus.append(stats.kendalltau(a, b).statistic)
    return np.array(taus, dtype=np.float64)


@dataclass(frozen=True)
class GranulatedTau:
    """Jiang et al.'s granulated tau and its parts.

    Attributes:
        value: The mean over hyper-parameters of their ``tau`` (None if none is defined).
        per_hyperparameter: Name to ``{"tau": mean tau over its groups or None, "groups":
            groups where tau was defined}``, for each hyper-parameter that varies.
        note: Why ``value`` is None, in words.
    """

    value: float | None
    per_hyperparameter: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None


def granulated_tau(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    hyperparameters: Sequence[str],
    fixed: Sequence[str] = (),
) -> GranulatedTau:
    """Granulated Kendall tau of column ``x`` against column ``y`` over ``rows``.

    For each hyper-parameter that takes two or more values, the rows are grouped by the
    values of every other hyper-parameter and of ``fixed`` (e.g. the seed), so that only
    that one varies within a group; tau is computed within each group of two or more
    complete rows where it is defined (neither side constant) and averaged. The granulated
    tau is the mean of those averages over hyper-parameters.

    Args:
        rows: One mapping per run, holding ``x``, ``y``, the hyper-parameters and ``fixed``.
        x: The measure's column.
        y: The target's column.
        hyperparameters: Columns that are the design's hyper-parameters.
        fixed: Columns that also define a group but are not averaged over (the seed).
    """
    varied = [h for h in hyperparameters if len({_key(r.get(h)) for r in rows}) > 1]
    if not varied:
        return GranulatedTau(None, note="no hyper-parameter varies over these runs")
    parts: dict[str, dict[str, Any]] = {}
    for name in varied:
        others = [h for h in hyperparameters if h != name] + list(fixed)
        groups: dict[tuple, list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(_key(row.get(o)) for o in others), []).append(row)
        taus = []
        for members in groups.values():
            tau, _, _ = kendall_tau([m.get(x) for m in members], [m.get(y) for m in members],
                                    minimum=2)  # fmt: skip
            if tau is not None:
                taus.append(tau)
        parts[name] = {"tau": float(np.mean(taus)) if taus else None, "groups": len(taus)}
    defined = [p["tau"] for p in parts.values() if p["tau"] is not None]
    if not defined:
        return GranulatedTau(None, parts, "tau is undefined in every group")
    return GranulatedTau(float(np.mean(defined)), parts)


def _key(value: Any) -> Hashable:
    """A hashable group key for a column value (lists and dicts by their text)."""
    return value if isinstance(value, Hashable) else repr(value)
