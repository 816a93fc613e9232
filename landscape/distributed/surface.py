"""Surfaces across processes: every rank evaluates a share of the points, rank 0 writes them.

Rank 0 alone opens the HDF5 file (:class:`~landscape.surface.store.SurfaceStore`: the lock, the
resume check, the ``done`` mask) and sends the grid, the directions and the ``done`` mask
to the other ranks (:func:`store_on_main`), which never touch the file. The unfinished
points are then computed in *rounds* (:func:`compute_surface_distributed`): each round
takes the next ``world_size * per_rank`` pending points and gives rank ``r`` the ``r``-th
contiguous chunk; rank 0 writes its own chunk, gathers the others' values and writes them
(values, then ``done`` flags, as in one process) before the next round. ``per_rank``
starts small and then grows to about ``target_seconds`` of work, timed on the slowest
rank, so the file is written at least that often.

Failures. A rank whose evaluation raises reports it in the round's gather; rank 0 writes
the other ranks' finished chunks of that round, and every rank raises
:class:`DistributedRunError` (rank 0's message names the failed rank and its error), after
which the command ends every process with a non-zero exit code. A rank that dies without
reporting (killed, out of memory) breaks the collective on the others, or the launcher
stops them with SIGTERM; rank 0 turns either into the same error. In both cases every
point already written stays final and ``--resume`` completes the file.

Test hook: ``FLATSCAPE_TEST_FAILURE="RANK:POINTS:MODE"`` makes rank ``RANK`` fail once it
has computed ``POINTS`` points, by raising (``MODE=raise``) or by exiting at once without
cleanup like a killed process (``MODE=exit``).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from landscape._types import Batch
from landscape.distributed.environment import DistributedRunError
from landscape.distributed.process import broadcast_object, collective_device, is_active, is_main
from landscape.distributed.process import rank as this_rank
from landscape.distributed.process import world_size as ranks
from landscape.surface.directions import Direction
from landscape.surface.evaluate import PointValues, SurfaceEvaluator, compute_surface
from landscape.surface.loss_surface import SingleProcess
from landscape.surface.store import SurfaceStore

FAILURE_VARIABLE = "FLATSCAPE_TEST_FAILURE"
WriteFunction = Callable[[np.ndarray, dict[str, PointValues]], None]


# -- rank 0 owns the file -------------------------------------------------------------------


@dataclass
class StoreView:
    """What a rank other than 0 knows of the surface file, as rank 0 sent it."""

    x: np.ndarray
    y: np.ndarray | None
    done: np.ndarray
    stored_directions: list[Direction]

    def directions(self) -> list[Direction]:
        """The directions rank 0 read from the file."""
        return self.stored_directions

    def pending(self) -> np.ndarray:
        """Flat indices of the points still to compute, as rank 0 sent them."""
        return np.flatnonzero(~self.done.reshape(-1))

    def write(self, indices: np.ndarray, values: Mapping[str, PointValues]) -> None:
        """Rank 0 writes; the other ranks only compute."""
        raise RuntimeError("only rank 0 writes the surface file")

    def close(self) -> None:
        """Nothing to close: the file is rank 0's."""


@contextmanager
def store_on_main(
    open_store: Callable[[], SurfaceStore],
) -> Iterator[SurfaceStore | StoreView]:
    """Open the store on rank 0 and show the other ranks a :class:`StoreView` of it.

    Without a process group this is ``with open_store() as store``. When rank 0 cannot
    open the file (locked, exists, other settings) it raises its own error and the other
    ranks raise a quiet :class:`DistributedRunError` with exit code 2.
    """
    if not is_active():
        with open_store() as store:
            yield store
        return
    if not is_main():
        sent = broadcast_object(None)
        if sent is None:
            raise DistributedRunError(
                "rank 0 could not open the surface file", 0, orderly=False, exit_code=2
            )
        yield StoreView(**sent)
        return
    store = None
    try:
        store = open_store()
        view = {"x": store.x, "y": store.y, "done": store.done}
        view["stored_directions"] = store.directions()
    except BaseException:
        if store is not None:
            store.close()
        broadcast_object(None)  # the other ranks stop instead of waiting for the view
        raise
    with store:
        broadcast_object(view)
        yield store


class TorchrunProcesses(SingleProcess):
    """:func:`~landscape.surface.loss_surface.loss_surface` on every process of a job.

    Rank 0 times the batch size, builds the directions and owns the file
    (:func:`store_on_main`); the points are computed in rounds by every rank
    (:func:`compute_surface_distributed`).
    """

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0."""
        return is_main()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        return broadcast_object(obj)

    def open_store(
        self, factory: Callable[[], SurfaceStore]
    ) -> AbstractContextManager[SurfaceStore | StoreView]:
        """The store on rank 0, a :class:`StoreView` of it elsewhere."""
        return store_on_main(factory)

    def compute(self, *args: Any, **kwargs: Any) -> None:
        """The pending points in rounds over the ranks."""
        compute_surface_distributed(*args, **kwargs)


def surface_processes() -> SingleProcess:
    """:class:`TorchrunProcesses` inside a torchrun job of several processes, else one."""
    return TorchrunProcesses() if is_active() else SingleProcess()


# -- the rounds -----------------------------------------------------------------------------


def compute_surface_distributed(
    evaluator: SurfaceEvaluator,
    data: Mapping[str, Iterable[Batch]],
    coords: np.ndarray,
    pending: np.ndarray,
    write: WriteFunction | None,
    progress: Callable[[int], None] | None = None,
    target_seconds: float = 5.0,
    max_block: int = 256,
) -> None:
    """:func:`~landscape.surface.evaluate.compute_surface` with the points split across processes.

    Every rank passes the same ``coords`` and ``pending``; ``write`` and ``progress`` are
    called on rank 0 only (other ranks may pass None). Without a process group this is
    :func:`~landscape.surface.evaluate.compute_surface`.

    Raises:
        DistributedRunError: a rank failed or stopped; on rank 0 every point that any rank
            finished before is written.
    """
    if not is_active():
        compute_surface(
            evaluator, data, coords, pending, write, progress, target_seconds, max_block
        )
        return
    world, me = ranks(), this_rank()
    splits = list(data)
    pending = np.asarray(pending, dtype=np.int64)
    cap = min(max_block, evaluator.max_block)
    per_rank = min(8, cap)
    failure = _InjectedFailure.from_env(me)
    with _sigterm_raises() as critical:
        while pending.size:
            chunks = np.array_split(pending[: world * per_rank], world)
            width = len(chunks[0])
            payload = _evaluate_chunk(evaluator, data, splits, coords[chunks[me]], width, failure)
            if is_main():  # its own points first: they are saved even if the gather fails
                with critical:
                    _write_chunks([payload.tensor], chunks[:1], splits, write, progress)
            gathered = _collective(_gather, payload, world)
            if is_main():
                with critical:
                    _write_chunks(gathered[1:], chunks[1:], splits, write, progress)
                control = _control(gathered, chunks)
            else:
                control = torch.zeros(2, dtype=torch.float64)
            control = _collective(_broadcast, control)
            failed_rank, seconds_per_point = int(control[0]), float(control[1])
            if failed_rank >= 0:
                _raise_reported(failed_rank, payload)
            per_rank = max(1, min(cap, int(target_seconds / max(seconds_per_point, 1e-9))))
            pending = pending[sum(len(c) for c in chunks) :]


def _evaluate_chunk(
    evaluator: SurfaceEvaluator,
    data: Mapping[str, Iterable[Batch]],
    splits: list[str],
    coords: np.ndarray,
    width: int,
    failure: _InjectedFailure,
) -> _Payload:
    """This rank's values for the round, padded to ``width`` points, or its error."""
    start = time.perf_counter()
    try:
        failure.check(len(coords))
        values = {s: evaluator.evaluate(data[s], coords) for s in splits} if len(coords) else {}
    except Exception as err:  # reported to rank 0, which stops every rank
        return _Payload.failed(f"{type(err).__name__}: {err}", width, len(splits))
    return _Payload.of(values, splits, width, time.perf_counter() - start)


@dataclass
class _Payload:
    """One rank's message of a round: ``[status, seconds, loss/acc per split and point]``.

    The error text itself stays on the failed rank until every rank knows of the failure.
    """

    tensor: torch.Tensor
    error: str | None = None

    @classmethod
    def of(cls, values: dict[str, PointValues], splits: list[str], width: int, seconds: float):
        tensor = torch.full((2 + 2 * len(splits) * width,), float("nan"), dtype=torch.float64)
        tensor[:2] = torch.tensor([0.0, seconds])
        for s, split in enumerate(splits):
            if split in values:
                count = len(values[split].loss)
                offset = 2 + 2 * s * width
                tensor[offset : offset + count] = torch.from_numpy(values[split].loss)
                tensor[offset + width : offset + width + count] = torch.from_numpy(
                    values[split].acc
                )
        return cls(tensor)

    @classmethod
    def failed(cls, error: str, width: int, nsplits: int):
        tensor = torch.zeros(2 + 2 * nsplits * width, dtype=torch.float64)
        tensor[0] = 1.0
        return cls(tensor, error)


def _gather(payload: _Payload, world: int) -> list[torch.Tensor] | None:
    device = collective_device()
    tensor = payload.tensor.to(device)
    gathered = [torch.empty_like(tensor) for _ in range(world)] if is_main() else None
    dist.gather(tensor, gathered, dst=0)
    return None if gathered is None else [t.cpu() for t in gathered]


def _broadcast(control: torch.Tensor) -> torch.Tensor:
    tensor = control.to(collective_device())
    dist.broadcast(tensor, src=0)
    return tensor.cpu()


def _write_chunks(
    payloads: list[torch.Tensor],
    chunks: list[np.ndarray],
    splits: list[str],
    write: WriteFunction | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Write the chunks whose payload holds values (status 0), in one store write."""
    good = [r for r, t in enumerate(payloads) if t[0] == 0 and len(chunks[r])]
    if not good:
        return
    width = (len(payloads[0]) - 2) // (2 * len(splits))
    indices = np.concatenate([chunks[r] for r in good])
    values = {}
    for s, split in enumerate(splits):
        loss = slice(2 + 2 * s * width, 2 + (2 * s + 1) * width)
        acc = slice(loss.stop, loss.stop + width)
        values[split] = PointValues(
            torch.cat([payloads[r][loss][: len(chunks[r])] for r in good]).numpy(),
            torch.cat([payloads[r][acc][: len(chunks[r])] for r in good]).numpy(),
        )
    if write is not None:
        write(indices, values)
    if progress is not None:
        progress(int(indices.size))


def _control(gathered: list[torch.Tensor], chunks: list[np.ndarray]) -> torch.Tensor:
    """``[first failed rank or -1, seconds per point of the slowest rank]``."""
    failed = [r for r, t in enumerate(gathered) if t[0] != 0]
    slowest = max(
        float(t[1]) / len(chunk) for t, chunk in zip(gathered, chunks, strict=True) if len(chunk)
    )
    return torch.tensor([failed[0] if failed else -1, slowest], dtype=torch.float64)


def _raise_reported(failed_rank: int, payload: _Payload) -> None:
    """Every rank is alive and knows rank ``failed_rank`` failed: bring its error to rank 0."""
    messages: list[Any] | None = [None] * ranks() if is_main() else None
    _collective(dist.gather_object, payload.error, messages, dst=0)
    if messages is None:
        raise DistributedRunError("stopped: another process failed", failed_rank, orderly=True)
    raise DistributedRunError(
        f"process {failed_rank} failed: {messages[failed_rank]}", failed_rank, orderly=True
    )


def _collective(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a collective; a peer that vanished becomes a :class:`DistributedRunError`."""
    try:
        return call(*args, **kwargs)
    except DistributedRunError:
        raise
    except RuntimeError as err:  # torch.distributed.DistBackendError and gloo/NCCL errors
        raise DistributedRunError(
            f"another process stopped without reporting why ({_short_reason(err)})",
            None,
            orderly=False,
        ) from None


def _short_reason(err: Exception) -> str:
    """The gist of a backend error.

    gloo's ``[file:line] Read error [addr]: Connection reset by peer. This is typically
    ...`` becomes ``Read error [addr]: Connection reset by peer``.
    """
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0][:200]


# -- being stopped --------------------------------------------------------------------------


class _Critical:
    """A section SIGTERM may not interrupt (a store write): the signal is acted on after it."""

    def __init__(self) -> None:
        self.inside = False
        self.deferred = False

    def __enter__(self) -> None:
        self.inside = True

    def __exit__(self, *exc: object) -> None:
        self.inside = False
        if self.deferred:
            self.deferred = False
            raise _stopped_by_signal()


def _stopped_by_signal() -> DistributedRunError:
    return DistributedRunError(
        "stopped by SIGTERM (torchrun stops every process when one of them ends with an "
        "error or is killed)",
        None,
        orderly=False,
    )


@contextmanager
def _sigterm_raises() -> Iterator[_Critical]:
    """Turn SIGTERM into :class:`DistributedRunError`, so rank 0 reports what was saved."""
    critical = _Critical()
    if threading.current_thread() is not threading.main_thread():
        yield critical
        return

    def handler(signum: int, frame: object) -> None:
        if critical.inside:
            critical.deferred = True
            return
        raise _stopped_by_signal()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield critical
    except BaseException:
        # A failed run still has to save its points and say so; torchrun's SIGTERM (it
        # stops every process once one has failed) must not cut that short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, previous)


@dataclass
class _InjectedFailure:
    """The test hook of :data:`FAILURE_VARIABLE` for this rank (inactive by default)."""

    after: int | None = None
    mode: str = "raise"
    computed: int = 0

    @classmethod
    def from_env(cls, rank: int) -> _InjectedFailure:
        text = os.environ.get(FAILURE_VARIABLE)
        if not text:
            return cls()
        failing_rank, points, mode = text.split(":")
        return cls(int(points), mode) if int(failing_rank) == rank else cls()

    def check(self, points: int) -> None:
        if self.after is not None and self.computed >= self.after:
            if self.mode == "exit":
                os._exit(1)
            raise RuntimeError(f"failure injected by {FAILURE_VARIABLE}")
        self.computed += points
