"""A PyTorch Lightning ``Callback`` that runs a :class:`SharpnessTracker` after each batch.

Importing this module imports ``lightning`` (or the older ``pytorch_lightning``); neither
is a dependency of flatscape::

    from landscape.tracking import SharpnessTracker
    from landscape.tracking.lightning import SharpnessCallback
    trainer = lightning.Trainer(callbacks=[SharpnessCallback(SharpnessTracker(probe, loss))])
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    from pytorch_lightning import Callback

from landscape.tracking.tracker import SharpnessTracker, optimizer_settings


class SharpnessCallback(Callback):
    """Calls ``tracker.step`` after every training batch of a Lightning ``Trainer``.

    The step is ``trainer.global_step`` (optimizer steps so far); ``lr`` and ``momentum``
    are the first optimizer's first parameter group's. Records are the tracker's.
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
