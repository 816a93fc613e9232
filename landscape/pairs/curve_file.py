r"""The HDF5 file of a Bezier curve: a 1D surface file over t, plus the training state.

It is a :class:`landscape.surface.store.SurfaceStore` file (so ``flatscape plot`` draws it
and its writes, lock and resume checks are the surfaces'): ``xcoordinates`` is the grid of
t, ``<split>_loss``/``<split>_acc``/``done`` the values along the curve, and
``directions/x`` the chord :math:`\theta_1 - \theta_0` (which pins the end points: a
rerun with other end points is refused). Besides, ``curve/state0`` and ``curve/state1``
each hold a training state: ``step`` (shape ``(1,)``, -1 when empty), ``control/<name>`` (the
control point) and ``momentum/<name>`` (SGD's momentum). A save overwrites the older slot,
values first, then (flushed) its ``step``: a process killed mid-save leaves the other slot,
the latest complete state, which a rerun continues from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from landscape.atomic_files import naming
from landscape.surface.store import SurfaceStore

SLOTS = ("curve/state0", "curve/state1")


@dataclass
class CurveState:
    """Where training stands: steps done, the control point and the momentum (CPU tensors)."""

    step: int
    control: dict[str, Tensor]
    momentum: dict[str, Tensor]


def initial_slots(control: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """The extra arrays of a new file: slot 0 at step 0 with ``control``, slot 1 empty."""
    arrays: dict[str, np.ndarray] = {}
    for slot, step in zip(SLOTS, (0, -1), strict=True):
        arrays[f"{slot}/step"] = np.array([step], dtype=np.int64)
        for name, tensor in control.items():
            value = tensor.detach().cpu().numpy()
            arrays[f"{slot}/control/{name}"] = value
            arrays[f"{slot}/momentum/{name}"] = np.zeros_like(value)
    return arrays


def read_state(store: SurfaceStore) -> CurveState:
    """The latest complete training state in the file."""
    steps = [int(store.file[f"{slot}/step"][0]) for slot in SLOTS]
    slot = SLOTS[int(np.argmax(steps))]
    group = store.file[slot]
    return CurveState(
        step=max(steps),
        control={n: torch.from_numpy(ds[...]) for n, ds in group["control"].items()},
        momentum={n: torch.from_numpy(ds[...]) for n, ds in group["momentum"].items()},
    )


def write_state(store: SurfaceStore, state: CurveState) -> None:
    """Save ``state`` into the older slot: tensors, flush, then its step, flush."""
    steps = [int(store.file[f"{slot}/step"][0]) for slot in SLOTS]
    group = store.file[SLOTS[int(np.argmin(steps))]]
    try:
        for kind, tensors in (("control", state.control), ("momentum", state.momentum)):
            for name, tensor in tensors.items():
                group[f"{kind}/{name}"][...] = tensor.detach().cpu().numpy()
        store.file.flush()
        group["step"][0] = state.step
        store.file.flush()
    except OSError as err:
        raise naming(err, store.path) from None
