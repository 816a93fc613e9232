"""``--loss model``: the loss a model computes itself when its inputs carry the labels.

Hugging Face models take ``labels=`` and return ``.loss`` (GPT-2's shifted next-token
cross-entropy, BERT's classification cross-entropy): :func:`own_loss_batches` puts each
batch's labels into its inputs and makes the model return that ``loss``, and
:func:`own_loss` is then the identity on it. Batches are weighted by their examples (the
model's loss is a batch mean whose count flatscape cannot see); measured in one batch,
as ``hessian`` does by default, that is exactly the model's loss on the examples.

The model's output is then one number per batch, not per example: a measurement that
needs outputs (the GGN and Fisher operators, PyHessian, accuracies, surfaces,
function-space comparisons) cannot run on it and is refused in one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distill.errors import DistillInputError
from distill.model_call import select_output

NAME = "model"
LABELS = "labels"


def own_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's own loss: its output once :func:`own_loss_batches` made it one."""
    return outputs


def _first_input(model: nn.Module) -> str:
    """The name of ``forward``'s first argument (``input_ids``, ``pixel_values``)."""
    parameters = list(inspect.signature(model.forward).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY,
    ):  # fmt: skip
        raise DistillInputError(
            f"--loss model: {type(model).__name__}.forward names no first argument; "
            "give dict inputs or name the loss (--loss cross_entropy, causal_lm, ...)"
        )
    return parameters[0].name


def takes_labels(model: nn.Module) -> bool:
    """Whether ``model.forward`` names a ``labels`` argument."""
    try:
        return LABELS in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def own_loss_batches(model: nn.Module, batches: list[tuple[Any, torch.Tensor]]) -> list:
    """Each batch with its labels in its inputs; ``model`` made to return its ``loss``.

    Raises:
        DistillInputError: ``forward`` takes no ``labels``.
    """
    if not takes_labels(model):
        raise DistillInputError(
            f"--loss model: {type(model).__name__}.forward takes no labels= (it computes no "
            "loss of its own); name the loss: --loss cross_entropy, causal_lm or token_ce"
        )
    select_output(model, "loss")
    first = None
    with_labels = []
    for inputs, targets in batches:
        if not isinstance(inputs, Mapping):
            first = first or _first_input(model)
            inputs = {first: inputs}
        with_labels.append(({**inputs, LABELS: targets}, targets))
    return with_labels


def refuse_own_loss(what: str) -> DistillInputError:
    """The one line for ``--loss model`` where ``what`` needs the model's outputs."""
    return DistillInputError(
        f"--loss model: {what} needs the model's outputs per example, and the loss the model "
        "computes is one number per batch; measure it with hessian (--operator hessian), or "
        "name the loss: --loss cross_entropy, causal_lm or token_ce"
    )
