"""The process group flatscape runs in under ``torchrun``, and the few collectives it uses.

flatscape scales out on the engine PyTorch ships rather than a home-made one: processes
started by ``torchrun`` find each other through the variables it sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and
:func:`init_from_env` joins them into :mod:`torch.distributed`'s default process group:
gloo for CPU tensors, NCCL for CUDA ones (one GPU per process, ``cuda:LOCAL_RANK``).

Without torchrun (or with ``WORLD_SIZE=1``) no group is created, every helper here
answers for a single process (rank 0 of 1) and no collective is ever called, so
single-process code paths run exactly as they did.

Example:
    >>> rank(), world_size(), is_main(), is_active()
    (0, 1, True, False)
    >>> shard(10, part=1, parts=3)
    range(3, 6)
    >>> all_reduce_sum(torch.ones(2)).tolist()  # one process: the tensor itself
    [1.0, 1.0]
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Sequence
from contextlib import suppress
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from landscape.distributed.environment import (  # noqa: F401  (re-exported)
    TIMEOUT_VARIABLE,
    TORCHRUN_VARIABLES,
    env_rank,
    launched_by_torchrun,
)
from landscape.errors import LandscapeInputError
from landscape.operators.batching import index_examples

T = TypeVar("T")


def is_active() -> bool:
    """Whether a process group of more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default group (0 when there is none)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of processes in the default group (1 when there is none)."""
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Whether this process is rank 0: the one that prints and writes files."""
    return rank() == 0


def init_from_env(device: torch.device | str) -> torch.device:
    """Join the torchrun job this process belongs to, and return the device it computes on.

    Under torchrun with ``WORLD_SIZE > 1`` this initializes the default process group once
    (gloo for ``cpu``, NCCL for ``cuda``), makes ``cuda:LOCAL_RANK`` the current device
    for CUDA, and destroys the group at interpreter exit. Otherwise it does nothing and
    returns ``device`` unchanged.

    Raises:
        LandscapeInputError: more processes on a machine than it has CUDA devices, or a
            group already initialized with the other backend.
    """
    device = torch.device(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return device
    if device.type == "cuda":
        local_rank, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local_rank >= count:
            raise LandscapeInputError(
                f"LOCAL_RANK {local_rank}: this machine has {count} CUDA device(s); start at "
                f"most {count} processes per machine (torchrun --nproc_per_node={count})"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_VARIABLE, 1800)))
        dist.init_process_group(backend, timeout=timeout)
        atexit.register(destroy)
    elif dist.get_backend() != backend:
        raise LandscapeInputError(
            f"the process group uses {dist.get_backend()}, but --device {device.type} "
            f"needs {backend}; give every process the same --device"
        )
    return device


EXIT_BARRIER_SECONDS = 10
"""How long a process leaving a gloo group waits for the others before it leaves anyway."""


def destroy() -> None:
    """Leave the process group (no-op without one), every process at the same point.

    A barrier first, so that no process closes its connections while another still
    uses them; then the group, and any collective's buffers left to gloo's worker
    threads, are freed while the interpreter is fully alive (a worker thread that frees
    a tensor during interpreter shutdown aborts the process).
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            with suppress(Exception):  # a peer that died or failed: leave after the timeout
                dist.monitored_barrier(timeout=timedelta(seconds=EXIT_BARRIER_SECONDS))
        dist.destroy_process_group()
        gc.collect()


def collective_device() -> torch.device:
    """Where tensors must be for a collective: the current GPU for NCCL, else the CPU."""
    if is_active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over all processes, on every process, on ``tensor``'s device.

    May reuse ``tensor``'s memory (it is summed in place when it already lies on the
    collective device). Every process must call it with the same shape and dtype.
    """
    if not is_active():
        return tensor
    buffer = tensor.to(collective_device())
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable object) on every process."""
    if not is_active():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every process arrives (no-op without a group)."""
    if is_active():
        dist.barrier()


def shard(count: int, part: int | None = None, parts: int | None = None) -> range:
    """Items of share ``part`` of ``count`` items split into ``parts`` contiguous shares.

    ``part`` defaults to this rank, ``parts`` to the world size; share sizes differ by at
    most one.
    """
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    return range(part * count // parts, (part + 1) * count // parts)


def _own_share(count: int, what: str, fix: str) -> range:
    """:func:`shard` of ``count`` items, refusing fewer items than processes."""
    world = world_size()
    if count < world:
        raise LandscapeInputError(
            f"{count} {what} for {world} processes: every process needs at least one; {fix}"
        )
    return shard(count)


def shard_batches(batches: Sequence[T]) -> list[T]:
    """This process's contiguous share of ``batches`` (all of them in a single process).

    Raises:
        LandscapeInputError: fewer batches than processes (a process would have no data).
    """
    batches = list(batches)
    share = _own_share(
        len(batches), "data batch(es)", "use a smaller --batch-size or fewer processes"
    )
    return batches[share.start : share.stop]


def shard_whole_batches(inputs: Any, targets: Tensor, batch_size: int) -> tuple[Any, Tensor]:
    """This process's contiguous share of the batches of ``batch_size``, as one block.

    A view of the examples: cut into ``batch_size`` again, it gives exactly those batches.

    Raises:
        LandscapeInputError: fewer batches than processes.
    """
    batches = -(-len(targets) // batch_size)
    share = _own_share(batches, "data batch(es)", "use a smaller --batch-size or fewer processes")
    rows = slice(share.start * batch_size, min(share.stop * batch_size, len(targets)))
    return index_examples(inputs, rows), targets[rows]


def shard_examples(inputs: Any, targets: Tensor) -> tuple[Any, Tensor]:
    """This process's contiguous share of one batch's examples (all of them in one process).

    Raises:
        LandscapeInputError: fewer examples than processes.
    """
    share = _own_share(len(targets), "example(s)", "use more --samples or fewer processes")
    rows = slice(share.start, share.stop)
    return index_examples(inputs, rows), targets[rows]
