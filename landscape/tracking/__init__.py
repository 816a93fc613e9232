"""Sharpness while training: a tracker any loop calls, and the edge-of-stability threshold.

Adapters for trainers are imported only when named (their packages are not dependencies):
``landscape.tracking.huggingface.SharpnessCallback`` (a ``transformers.TrainerCallback``)
and ``landscape.tracking.lightning.SharpnessCallback`` (a Lightning ``Callback``).
"""

from landscape.tracking.stability import stability_threshold
from landscape.tracking.tracker import SharpnessTracker

__all__ = ["SharpnessTracker", "stability_threshold"]
