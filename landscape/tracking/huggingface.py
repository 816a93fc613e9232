"""A Hugging Face ``TrainerCallback`` that runs a :class:`SharpnessTracker` after each step.

``SharpnessCallback`` is built when it is first looked up, importing ``transformers``
then (not a dependency of flatscape; importing this module alone does not)::

    from landscape.tracking import SharpnessTracker
    from landscape.tracking.huggingface import SharpnessCallback
    tracker = SharpnessTracker(probe_batches, loss_fn, every=50)
    trainer = Trainer(model, args, ..., callbacks=[SharpnessCallback(tracker)])
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from landscape.tracking.tracker import SharpnessTracker, optimizer_settings


@functools.cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    class SharpnessCallback(TrainerCallback):
        """Calls ``tracker.step`` at the end of every optimizer step of a ``Trainer``.

        The step is ``state.global_step``; ``lr`` and ``momentum`` are the optimizer's
        first parameter group's (the scheduler has already stepped: the rate the next step
        uses). Records are the tracker's (``tracker.records``, and its ``log``).
        """

        def __init__(self, tracker: SharpnessTracker) -> None:
            self.tracker = tracker

        def on_step_end(
            self,
            args: Any,
            state: Any,
            control: Any,
            model: nn.Module | None = None,
            optimizer: Any = None,
            **kwargs: Any,
        ) -> Any:
            """Measure when the tracker is due (the ``Trainer`` passes the model, optimizer)."""
            if model is not None:
                self.tracker.step(model, step=state.global_step, **optimizer_settings(optimizer))
            return control

    return SharpnessCallback


def __getattr__(name: str) -> Any:
    """``SharpnessCallback``, built (and transformers imported) on first use."""
    if name == "SharpnessCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
