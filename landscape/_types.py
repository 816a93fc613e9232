"""What every wing of :mod:`landscape` shares: batches, losses, the analysis mode, moving data.

A *batch* is a pair ``(inputs, targets)``: ``inputs`` is what the model's ``forward`` takes
(a tensor, or a dict/list/tuple of tensors; a dict whose keys ``forward`` names is given as
keyword arguments, :func:`call_model`), ``targets`` a tensor whose first axis counts the
examples. The model's output reaches the loss as one tensor (:func:`model_outputs`). A *loss
function* maps ``(outputs, targets)`` to the
*mean* loss of the batch, as ``torch.nn.functional.cross_entropy`` does; batches are then
weighted by their size, so every number is that of the mean over all examples. A loss that
averages over tokens instead carries ``count(targets) -> int`` and batches are weighted by
it (:func:`batch_weight`): the mean over all counted tokens.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.errors import LandscapeInputError

Batch = tuple[Any, Tensor]
LossFunction = Callable[[Any, Tensor], Tensor]

BN_MODES = ("eval", "train")
T = TypeVar("T")


def check_bn_mode(bn_mode: str) -> str:
    """Return ``bn_mode`` when it is ``"eval"`` or ``"train"``; raise the user error otherwise."""
    if bn_mode not in BN_MODES:
        raise LandscapeInputError(f"bn_mode {bn_mode!r}: choose one of {', '.join(BN_MODES)}")
    return bn_mode


class _Kept:
    """One tensor as it was: the object, its dtype, device and shape, and a copy of its values."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor
        self.meta = (tensor.dtype, tensor.device, tensor.shape)
        with torch.inference_mode(False), torch.no_grad():  # a copy outside inference mode
            self.copy = tensor.detach().clone(memory_format=torch.contiguous_format)

    def restore(self) -> None:
        """Give the tensor its values back, writing to it only if they differ."""
        tensor = self.tensor
        # inference_mode(False) turns gradients on: no_grad goes inside it
        with torch.inference_mode(tensor.is_inference()), torch.no_grad():
            if (tensor.dtype, tensor.device, tensor.shape) != self.meta:
                tensor.data = self.copy
            elif not _same_bits(tensor, self.copy):
                tensor.copy_(self.copy)


def _same_bits(tensor: Tensor, copy: Tensor) -> bool:
    """Whether ``tensor`` holds the bits of its contiguous ``copy`` (a NaN equals itself).

    Values are compared, not version counters: BatchNorm updates its running statistics
    without bumping theirs, and neither does a write through ``.data``.
    """
    bits = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    return torch.equal(bits, copy.reshape(-1).view(torch.uint8))


class ModelState:
    """What a measurement must give back to a model: tensors, modes, ``requires_grad``, grads.

    Taken by the outermost :func:`analysis_mode` on a model, at the cost of one copy of
    its parameters, buffers and gradients. :meth:`restore` puts every parameter and buffer
    object back in its module, gives back any values that were changed (a tensor whose
    values did not change is not written to, so gradient graphs that saved it stay
    valid), and restores each module's ``training``, each parameter's ``requires_grad``
    and ``.grad`` (None stays None; an existing gradient keeps its values).
    """

    def __init__(self, model: nn.Module) -> None:
        modules = list(model.modules())
        self.training = [(module, module.training) for module in modules]
        self.tables = [
            (table, dict(table)) for m in modules for table in (m._parameters, m._buffers)
        ]
        tensors = {id(t): t for _, saved in self.tables for t in saved.values() if t is not None}
        self.kept = [_Kept(t) for t in tensors.values()]
        params = [p for p in tensors.values() if isinstance(p, nn.Parameter)]
        self.requires_grad = [(p, p.requires_grad) for p in params]
        self.grads = [(p, p.grad, None if p.grad is None else _Kept(p.grad)) for p in params]

    def restore(self) -> None:
        """Put the model back as it was taken."""
        for module, training in self.training:
            module.training = training
        for table, saved in self.tables:
            if table.keys() != saved.keys() or any(table[k] is not t for k, t in saved.items()):
                table.clear()
                table.update(saved)
        for kept in self.kept:
            kept.restore()
        for p, flag in self.requires_grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for p, grad, kept in self.grads:
            if p.grad is not grad:
                p.grad = grad
            if kept is not None:
                kept.restore()


_GUARDED: weakref.WeakSet[nn.Module] = weakref.WeakSet()
"""Models inside an :func:`analysis_mode` block that will give them back."""


@contextmanager
def analysis_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """Put the model in eval mode (BatchNorm layers in train mode if asked), then give it back.

    The outermost block on a model gives it back exactly as it came in, also on an
    exception (:class:`ModelState`): every module's ``training`` flag, its parameters and
    buffers, ``requires_grad`` and ``.grad``. Blocks nested in it (a product inside a
    measurement) only switch modes and give back the modes they found.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> with analysis_mode(model, "train"):
        ...     [m.training for m in model]
        [False, True]
        >>> [m.training for m in model]
        [True, True]
    """
    outermost = model not in _GUARDED
    state = ModelState(model) if outermost else None
    saved = [(module, module.training) for module in model.modules()]
    try:
        if outermost:
            _GUARDED.add(model)
        model.eval()
        if bn_mode == "train":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train()
        yield
    finally:
        for module, training in saved:
            module.training = training
        if state is not None:
            _GUARDED.discard(model)
            state.restore()


def in_analysis_mode(function: Callable[..., T]) -> Callable[..., T]:
    """Run a public call inside :func:`analysis_mode` on its ``model`` argument.

    The mode is the call's ``bn_mode`` argument where it has one, else eval; the model
    comes back exactly as it went in, whatever path the call takes. Every public call
    that takes a model (``__init__`` for a class) is entered through this.
    """
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        model = bound.arguments["model"]
        if not isinstance(model, nn.Module):  # the call's own checks say what is wrong
            return function(*args, **kwargs)
        with analysis_mode(model, bound.arguments.get("bn_mode", "eval")):
            return function(*args, **kwargs)

    call.in_analysis_mode = True  # type: ignore[attr-defined]
    return call


def move_to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``value`` on ``device``, floating tensors in ``dtype``; dicts, lists, tuples recursively.

    Integer tensors (class labels, token ids) keep their dtype; anything else is returned
    as it is.

    Example:
        >>> moved = move_to({"x": torch.ones(2), "ids": torch.ones(2, dtype=torch.long)},
        ...                 torch.device("cpu"), torch.float64)
        >>> moved["x"].dtype, moved["ids"].dtype
        (torch.float64, torch.int64)
    """
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
    if isinstance(value, Mapping):
        return {key: move_to(item, device, dtype) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(move_to(item, device, dtype) for item in value)
    return value


def move_batch(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """An ``(inputs, targets)`` batch moved with :func:`move_to`."""
    inputs, targets = batch
    return move_to(inputs, device, dtype), move_to(targets, device, dtype)


def batch_size(batch: Batch) -> int:
    """Number of examples in ``(inputs, targets)``, read from the targets' first axis."""
    return int(batch[1].shape[0])


def batch_weight(loss_fn: LossFunction | None, batch: Batch) -> int:
    """What ``batch`` counts for in a mean over batches: its examples, or the loss's count.

    A loss that is a mean over something other than examples (a token loss: the tokens
    whose label is not ``-100``) carries ``count(targets) -> int``; every measurement
    weights a batch's mean loss by it, so the result is the mean over all counted items.
    """
    count = getattr(loss_fn, "count", None)
    return batch_size(batch) if count is None else int(count(batch[1]))


def batch_weights(batches: Sequence[Batch], loss_fn: LossFunction | None = None) -> list[float]:
    """Weights :math:`n_k / N` that turn per-batch mean losses into the overall mean.

    :math:`n_k` is :func:`batch_weight`: examples, or the tokens ``loss_fn`` counts.

    Raises:
        LandscapeInputError: no batch, an empty one, or nothing counted in any.
    """
    if not batches or min(batch_size(b) for b in batches) < 1:
        raise LandscapeInputError("batches: need at least one non-empty (inputs, targets) batch")
    sizes = [batch_weight(loss_fn, b) for b in batches]
    total = sum(sizes)
    if total < 1:
        raise LandscapeInputError("batches: the loss counts no token (every label is -100)")
    return [n / total for n in sizes]


def _takes_keywords(model: nn.Module, keys: Any) -> bool:
    """Whether ``model.forward`` names every key (or takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return True
    named = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return set(keys) <= named


def call_model(model: nn.Module, inputs: Any, tensors: dict[str, Tensor] | None = None) -> Any:
    """The model's raw output on ``inputs``, with its tensors replaced by ``tensors`` if given.

    A dict (or ``UserDict``, as Hugging Face's ``BatchEncoding``) whose keys all name
    arguments of ``forward`` (``input_ids``, ``attention_mask``) is passed as keyword
    arguments; anything else, a dict included, as the one positional argument.

    Example:
        >>> class Tokens(nn.Module):
        ...     def forward(self, input_ids, attention_mask=None):
        ...         return input_ids * attention_mask
        >>> batch = {"input_ids": torch.tensor([2]), "attention_mask": torch.tensor([1])}
        >>> call_model(Tokens(), batch)
        tensor([2])
    """
    if isinstance(inputs, Mapping) and _takes_keywords(model, inputs.keys()):
        args, kwargs = (), dict(inputs)
    else:
        args, kwargs = (inputs,), {}
    if tensors is None:
        return model(*args, **kwargs)
    return functional_call(model, tensors, args, kwargs)


def model_outputs(raw: Any, key: str | None = None) -> Tensor:
    """The one tensor of a model's output that every loss, accuracy and curvature sees.

    The rule: a tensor is itself; a ``ModelOutput``, dict or dataclass gives its ``key``
    (default ``"logits"``) attribute or entry; without ``key``, one that has no
    ``logits`` gives its first entry, as does a tuple or list.

    Raises:
        LandscapeInputError: ``key`` names nothing in the output, or no tensor is found.

    Example:
        >>> model_outputs({"loss": torch.tensor(0.5), "logits": torch.ones(1, 2)})
        tensor([[1., 1.]])
        >>> model_outputs((torch.zeros(1), torch.ones(1)))
        tensor([0.])
    """
    if isinstance(raw, Tensor) and key is None:
        return raw
    found = _entry(raw, key or "logits")
    if found is None and key is None:
        found = _first(raw)
    if not isinstance(found, Tensor):
        what = f"no {key!r}" if key else "no logits and no first tensor"
        raise LandscapeInputError(
            f"model output of type {type(raw).__name__}: {what}; name the tensor to use with "
            "output_key (--output-key NAME)"
        )
    return found


def _entry(raw: Any, key: str) -> Any:
    if isinstance(raw, Mapping):
        return raw.get(key)
    if isinstance(raw, list | tuple | Tensor):
        return None
    return getattr(raw, key, None)


def _first(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return next((v for v in raw.values() if v is not None), None)
    if isinstance(raw, list | tuple):
        return raw[0] if raw else None
    fields = getattr(raw, "__dataclass_fields__", None)
    if fields:
        return next((getattr(raw, f) for f in fields if getattr(raw, f) is not None), None)
    return None


def select_output(model: nn.Module, key: str) -> torch.utils.hooks.RemovableHandle:
    """Make ``model`` return the output ``key`` names (``--output-key``) instead of the rule's.

    A forward hook, so parameter names and ``functional_call`` are unchanged; ``.remove()``
    the returned handle to undo it.
    """
    return model.register_forward_hook(lambda _module, _args, raw: model_outputs(raw, key))
