r"""Sharpness while training: :math:`\lambda_1` of a fixed probe set, every few steps.

A :class:`SharpnessTracker` is called from any training loop after each optimizer step
(``tracker.step(model, step=..., lr=..., momentum=...)``). Every ``every`` steps it
measures the top Hessian eigenvalue of the mean loss over a fixed probe set on the one
measurement path (:func:`~landscape.curvature.model.model_curvature`: the batches, graphs
and memory of ``flatscape hessian``), model in eval mode by default, and starts Lanczos
from the previous measurement's Ritz vector (a warm start: the same certified tolerance,
fewer products, as the weights move little between measurements).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from landscape._types import Batch, LossFunction, check_bn_mode, in_analysis_mode
from landscape.curvature.measure import CurvatureRequest
from landscape.curvature.model import model_curvature
from landscape.errors import LandscapeInputError
from landscape.operators.batching import gather_examples
from landscape.tracking.stability import stability_threshold

TrackLog = Callable[[dict[str, Any]], object]


def optimizer_settings(optimizer: Any) -> dict[str, float]:
    """``lr`` and ``momentum`` of an optimizer's first parameter group (those it has)."""
    if optimizer is None or not getattr(optimizer, "param_groups", None):
        return {}
    group = optimizer.param_groups[0]
    return {key: float(group[key]) for key in ("lr", "momentum") if key in group}


class SharpnessTracker:
    r"""Measures :math:`\lambda_1` (and optionally the trace) along a training run.

    Args:
        probe: The probe set: a DataLoader or list of ``(inputs, targets)`` batches, read
            once here (its first ``samples`` examples), so every measurement sees the same
            examples.
        loss_fn: Mean loss of a batch (e.g. ``torch.nn.functional.cross_entropy``).
        every: Measure at every ``every``-th step (``step % every == 0``); None: only when
            :meth:`step` is called with ``force=True``.
        samples: Examples of ``probe`` measured (default: all).
        trace: Also a Hutch++ trace estimate per measurement (``trace_matvecs`` products).
        trace_matvecs: Products of the trace estimate.
        bn_mode: ``"eval"`` (default) or ``"train"`` BatchNorm during the measurement; the
            model comes back in the mode it was in.
        tol: Relative tolerance of :math:`\lambda_1` (the Lanczos residual bound).
        seed: Seed of the first start vector and of the trace probes.
        warm_start: Start each measurement from the previous one's Ritz vector.
        max_memory: The measurement's memory budget (``"auto"``, None or bytes).
        log: Called with every record (e.g. a JSON-lines writer); records are also kept in
            :attr:`records`.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> data = [(torch.randn(64, 4), torch.randint(0, 3, (64,)))]
        >>> tracker = SharpnessTracker(data, nn.functional.cross_entropy, every=2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> for step in range(1, 5):
        ...     optimizer.zero_grad()
        ...     nn.functional.cross_entropy(model(data[0][0]), data[0][1]).backward()
        ...     optimizer.step()
        ...     _ = tracker.step(model, step=step, lr=0.1)
        >>> [r["step"] for r in tracker.records], tracker.records[-1]["stability_threshold"]
        ([2, 4], 20.0)
    """

    def __init__(
        self,
        probe: Iterable[Batch],
        loss_fn: LossFunction,
        *,
        every: int | None = 1,
        samples: int | None = None,
        trace: bool = False,
        trace_matvecs: int = 99,
        bn_mode: str = "eval",
        tol: float = 1e-3,
        seed: int = 0,
        warm_start: bool = True,
        max_memory: int | str | None = "auto",
        log: TrackLog | None = None,
    ) -> None:
        if every is not None and (isinstance(every, bool) or every < 1):
            raise LandscapeInputError(f"every {every}: measure every N >= 1 steps, or None")
        self.bn_mode = check_bn_mode(bn_mode)
        self.request = CurvatureRequest(top_k=1, tol=tol, seed=seed, trace=trace,
                                        trace_matvecs=trace_matvecs)  # fmt: skip
        self.request.check()
        self.probe = [gather_examples(probe, samples)]
        self.examples = int(self.probe[0][1].shape[0])
        self.loss_fn, self.every, self.warm_start = loss_fn, every, warm_start
        self.max_memory, self.log = max_memory, log
        self.vectors: torch.Tensor | None = None
        self.records: list[dict[str, Any]] = []
        self.calls = 0

    def due(self, step: int) -> bool:
        """Whether ``step`` is one the tracker measures at without being forced."""
        return self.every is not None and step % self.every == 0

    def step(
        self,
        model: nn.Module,
        step: int | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        loss: float | None = None,
        force: bool = False,
        **fields: Any,
    ) -> dict[str, Any] | None:
        """Call after each optimizer step; measures when the step is due (or ``force``).

        Args:
            model: The model being trained (given back exactly as it came).
            step: The optimizer step just taken (default: this tracker's own count).
            lr: The learning rate, recorded with its stability threshold.
            momentum: Heavy-ball momentum, recorded (threshold ``(2 + 2 momentum) / lr``).
            loss: The training loss of the step, recorded as it is.
            force: Measure whatever the step (e.g. after the last one).
            **fields: More JSON values recorded as they are (``epoch=...``).

        Returns:
            The record (``step``, ``lambda_1``, ``residual``, ``converged``, ``matvecs``,
            ``probe_loss``, ``probe_examples``, ``seconds``; ``lr``, ``momentum``,
            ``loss``, ``stability_threshold`` when given; ``trace`` and ``trace_stderr``
            with ``trace``), or None when nothing was measured.
        """
        self.calls += 1
        step = self.calls if step is None else step
        if not (force or self.due(step)):
            return None
        given = {"lr": lr, "momentum": momentum, "loss": loss}
        record = {"step": step, **{k: v for k, v in given.items() if v is not None}, **fields}
        if lr is not None:
            record["stability_threshold"] = stability_threshold(lr, momentum or 0.0)
        record.update(self.measure(model))
        self.records.append(record)
        if self.log is not None:
            self.log(record)
        return record

    @in_analysis_mode
    def measure(self, model: nn.Module) -> dict[str, Any]:
        """One measurement now, warm-started from the last one (no step bookkeeping)."""
        began = time.perf_counter()
        dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
        start = self.vectors if self.warm_start and self._fits(dim) else None
        result = model_curvature(model, self.loss_fn, self.probe, self.request,
                                 max_memory=self.max_memory, bn_mode=self.bn_mode,
                                 start=start)  # fmt: skip
        eigen = result.eigen
        self.vectors = eigen.eigenvectors
        record = {
            "lambda_1": float(eigen.eigenvalues[0]),
            "residual": float(eigen.residuals[0]),
            "converged": eigen.converged,
            "matvecs": result.matvecs,
            "probe_loss": result.loss,
            "probe_examples": result.examples,
        }
        if result.trace is not None:
            record.update(trace=result.trace.estimate, trace_stderr=result.trace.stderr)
        record["seconds"] = round(time.perf_counter() - began, 4)
        return record

    def _fits(self, dim: int) -> bool:
        """Whether the kept vector fits the model (a parameter (un)frozen since: no)."""
        return self.vectors is not None and self.vectors.shape[0] == dim
