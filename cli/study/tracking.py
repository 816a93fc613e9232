"""Sharpness while ``train`` and ``distill`` run: λ1 of a fixed probe set in the run's log.

:class:`TrainingSharpness` is the :class:`distill.trainer.StepTracker` the commands hand
to the trainer (``distill`` never imports ``landscape``): at the start of a run it takes
the first ``samples`` train examples (dataset order, no augmentation: what ``flatscape
hessian --samples N`` of the saved checkpoint measures) and the loss ``hessian`` takes by
default (the run's token loss, else cross-entropy, for teachers and students alike), and
builds a :class:`landscape.tracking.SharpnessTracker`; after the steps it is due at (every
``every`` steps, each epoch's last with ``every_epoch``, and always the run's last) the
tracker measures λ1, and the record goes to the run's JSON-lines log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distill.errors import DistillInputError

if TYPE_CHECKING:  # annotations only; torch loads on first use
    import torch

    from distill.bundle import DatasetBundle
    from landscape.tracking import SharpnessTracker

DEFAULT_SAMPLES = 256


@dataclass(frozen=True)
class TrackingSettings:
    """When and how λ1 is tracked during training (``--track-*`` flags).

    Attributes:
        every: Measure every this many optimizer steps (None: only as below).
        every_epoch: Measure after each epoch's last step.
        samples: First train examples of the probe set.
        trace: Also a Hutch++ trace estimate per measurement.
        bn_mode: ``eval`` (default) or ``train`` BatchNorm during the measurement.
        tol: Relative tolerance of λ1 (``--track-tol``; default ``flatscape hessian``'s).
    """

    every: int | None = None
    every_epoch: bool = False
    samples: int = DEFAULT_SAMPLES
    trace: bool = False
    bn_mode: str = "eval"
    tol: float = 1e-3

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise DistillInputError(f"--track-sharpness {self.every}: give N >= 1 steps")
        if self.samples < 1:
            raise DistillInputError(f"--track-samples {self.samples}: must be >= 1")

    @property
    def enabled(self) -> bool:
        """Whether anything is tracked."""
        return self.every is not None or self.every_epoch


class TrainingSharpness:
    """λ1 of a training run's probe set after the steps ``settings`` names (a StepTracker).

    One object serves several runs (the generations of ``distill``): each run starts a
    new tracker, cold, as its weights are new.
    """

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self.tracker: SharpnessTracker | None = None

    def begin(self, bundle: DatasetBundle, loss: str, device: torch.device) -> None:
        """A fresh tracker on the run's first ``samples`` train examples and its loss."""
        from distill.sources import analysis_loss, first_examples
        from landscape.tracking import SharpnessTracker

        s = self.settings
        loss_fn, _ = analysis_loss(loss)
        probe = first_examples(bundle.train_eval, s.samples, s.samples, device)
        self.tracker = SharpnessTracker(probe, loss_fn, every=s.every, trace=s.trace,
                                        bn_mode=s.bn_mode, tol=s.tol)  # fmt: skip

    def after_step(self, model: torch.nn.Module, info: dict[str, Any]) -> dict[str, Any] | None:
        """The record of a measurement after this step, or None when it is not due."""
        if self.tracker is None:
            raise RuntimeError("TrainingSharpness.begin was not called before the first step")
        force = info["last"] or (self.settings.every_epoch and info["epoch_end"])
        return self.tracker.step(model, step=info["step"], lr=info["lr"],
                                 momentum=info["momentum"], loss=info["loss"], force=force,
                                 epoch=info["epoch"])  # fmt: skip


def training_sharpness(settings: TrackingSettings) -> TrainingSharpness | None:
    """The tracker the trainer takes, or None when ``settings`` track nothing."""
    return TrainingSharpness(settings) if settings.enabled else None
