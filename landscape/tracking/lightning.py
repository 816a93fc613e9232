"""A PyTorch Lightning ``Callback`` that runs a :class:`SharpnessTracker` after each batch.

``SharpnessCallback`` is built when it is first looked up, importing ``lightning`` (or the
older ``pytorch_lightning``) then; neither is a dependency of flatscape, and importing
this module alone imports neither::

    from landscape.tracking import SharpnessTracker
    from landscape.tracking.lightning import SharpnessCallback
    trainer = lightning.Trainer(callbacks=[SharpnessCallback(SharpnessTracker(probe, loss))])
"""

from __future__ import annotations

import functools
from typing import Any

from landscape.tracking.tracker import SharpnessTracker, optimizer_settings


@functools.cache
def _callback_class() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:  # the older package name
        from pytorch_lightning import Callback

    class SharpnessCallback(Callback):
        """Calls ``tracker.step`` after every training batch of a Lightning ``Trainer``.

        The step is ``trainer.global_step`` (optimizer steps so far); ``lr`` and
        ``momentum`` are the first optimizer's first parameter group's. Records are the
        tracker's.
        """

        def __init__(self, tracker: SharpnessTracker) -> None:
            super().__init__()
            self.tracker = tracker

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            """Measure when the tracker is due."""
            optimizers = getattr(trainer, "optimizers", None) or [None]
            self.tracker.step(pl_module, step=trainer.global_step,
                              **optimizer_settings(optimizers[0]))  # fmt: skip

    return SharpnessCallback


def __getattr__(name: str) -> Any:
    """``SharpnessCallback``, built (and Lightning imported) on first use."""
    if name == "SharpnessCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
