"""Fast, temporary substitution of a module's parameters and buffers by other tensors.

:func:`torch.func.functional_call` does the same but walks the module tree on every call
(about 0.1 ms for a small network), which is the whole cost of a forward pass of a small
MLP on a few hundred examples. :class:`TensorSlots` finds the dictionary entries that hold
each tensor once, then swaps plain dictionary values, and puts the originals back when its
context ends, also on an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import chain

from torch import Tensor, nn

Slot = tuple[dict, str]


class TensorSlots:
    """Where each named parameter or buffer of a module lives (tied tensors: every place).

    Args:
        model: The module.
        names: Parameter or buffer names as ``named_parameters()``/``named_buffers()``
            give them.

    Example:
        >>> import torch
        >>> model = nn.Linear(2, 1, bias=False)
        >>> slots = TensorSlots(model, ["weight"])
        >>> with slots.substituted():
        ...     slots.fill(slots.assignments({"weight": torch.ones(1, 2)}))
        ...     model(torch.ones(1, 2)).item()
        2.0
        >>> model.weight is dict(model.named_parameters())["weight"]
        True
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        canonical = {
            id(t): name for name, t in chain(model.named_parameters(), model.named_buffers())
        }
        everywhere = chain(
            model.named_parameters(remove_duplicate=False),
            model.named_buffers(remove_duplicate=False),
        )
        wanted = set(names)
        self.slots: dict[str, list[Slot]] = {name: [] for name in wanted}
        for full_name, tensor in everywhere:
            name = canonical[id(tensor)]
            if name not in wanted:
                continue
            path, _, attr = full_name.rpartition(".")
            module = model.get_submodule(path)
            table = module._parameters if attr in module._parameters else module._buffers
            self.slots[name].append((table, attr))
        missing = [name for name, places in self.slots.items() if not places]
        if missing:
            raise KeyError(f"{missing[0]!r} is neither a parameter nor a buffer of the model")

    def assignments(self, tensors: Mapping[str, Tensor]) -> list[tuple[dict, str, Tensor]]:
        """The dictionary writes that put ``tensors`` in place (prepare once, fill often)."""
        return [
            (table, attr, tensor)
            for name, tensor in tensors.items()
            for table, attr in self.slots[name]
        ]

    @staticmethod
    def fill(assignments: list[tuple[dict, str, Tensor]]) -> None:
        """Make the prepared dictionary writes (inside :meth:`substituted`)."""
        for table, attr, tensor in assignments:
            table[attr] = tensor

    @contextmanager
    def substituted(self) -> Iterator[TensorSlots]:
        """Allow :meth:`fill` inside; the original tensors are back when the block ends."""
        saved = [
            (table, attr, table[attr]) for places in self.slots.values() for table, attr in places
        ]
        try:
            yield self
        finally:
            self.fill(saved)
