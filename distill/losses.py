r"""Cross-entropy and the knowledge-distillation loss, per example.

Losses return one value per example and leave the reduction to the caller (the batch
mean, in training), as optax does: with the KL summed over classes *per example*, the
batch mean of these values is exactly PyTorch's ``kl_div(..., reduction="batchmean")``,
and the classic mistakes (a forgotten :math:`T^2`, ``reduction="mean"`` dividing by the
number of classes too) cannot be written silently.

The KD loss (Hinton et al. 2015), per example:

.. math::
    \ell = (1 - \alpha)\,\mathrm{CE}(z_s, y)
         + \alpha\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T)\big)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from distill.errors import DistillInputError
from distill.user_code import describe_error, import_callable, is_code_spec

ALPHA_MEANING = (
    "alpha weights the distillation term: loss = (1 - alpha) * CE(student, labels) "
    "+ alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)), KL summed over "
    "classes and averaged over the batch; alpha = 1 is pure self-distillation "
    "(labels unused), alpha = 0 is plain training on labels"
)


@dataclass(frozen=True)
class KDConfig:
    """Distillation settings, validated on construction.

    Attributes:
        temperature: softmax temperature T > 0 applied to teacher and student logits.
        alpha: weight of the KL term, in [0, 1]; see `ALPHA_MEANING`.
    """

    temperature: float = 4.0
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise DistillInputError(f"--temperature {self.temperature}: must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise DistillInputError(f"--alpha {self.alpha}: must lie in [0, 1] ({ALPHA_MEANING})")

    def to_metadata(self) -> dict:
        """The settings as recorded in a checkpoint, with alpha's meaning spelled out."""
        return {**asdict(self), "alpha_meaning": ALPHA_MEANING}


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy with hard labels, shape ``(N,)``."""
    return F.cross_entropy(logits, targets, reduction="none")


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    r"""Per-example cross-entropy against soft labels: :math:`-\sum_c q_c \log p_c`."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    r"""Per-example :math:`\mathrm{KL}(\mathrm{softmax}(z_t/T)\|\mathrm{softmax}(z_s/T))`."""
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    config: KDConfig,
) -> torch.Tensor:
    """Per-example KD loss, shape ``(N,)``; take ``.mean()`` for the batch-mean loss."""
    t = config.temperature
    distill = t * t * kl_to_teacher(student_logits, teacher_logits.detach(), t)
    if config.alpha == 1.0:
        return distill
    return (1.0 - config.alpha) * cross_entropy(student_logits, targets) + config.alpha * distill


def mse_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every output entry; class indices count as one-hot targets."""
    if not targets.dtype.is_floating_point:
        targets = F.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
    return F.mse_loss(outputs, targets.reshape(outputs.shape))


mse_loss.likelihood = "gaussian"  # a Gaussian negative log-likelihood, for the MC Fisher

ANALYSIS_LOSSES = {"cross_entropy": F.cross_entropy, "mse": mse_loss}
"""The losses ``--loss`` names: batch means, as every curvature and surface measures."""


def analysis_loss(spec: str) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dict]:
    """The loss ``--loss`` names: ``cross_entropy``, ``mse`` or ``file.py:callable``.

    A callable is ``loss(outputs, targets) -> mean loss`` (a scalar tensor, differentiable
    twice for curvature). Returns it and its record (``{"name", "spec", "source",
    "source_sha256"}``).
    """
    if spec in ANALYSIS_LOSSES:
        return ANALYSIS_LOSSES[spec], {"name": spec}
    if not is_code_spec(spec):
        raise DistillInputError(
            f"--loss {spec!r}: choose {', '.join(ANALYSIS_LOSSES)} or name one as file.py:callable"
        )
    user = import_callable(spec, "--loss")
    return user.function, {"name": spec, **user.provenance()}


def check_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    name: str,
) -> None:
    """Call the model and the loss once on 8 examples: a scalar tensor, or one clear line.

    A NaN/inf value is left to the measurement, which names the examples it was over.
    """
    inputs, targets = batch[0][:8], batch[1][:8]
    with torch.no_grad():
        try:
            outputs = model(inputs)
        except Exception as err:
            raise DistillInputError(
                f"the model cannot take these inputs of shape {tuple(inputs.shape)}: "
                f"{describe_error(err)}"
            ) from err
        soft = isinstance(outputs, torch.Tensor) and targets.shape == outputs.shape
        if name == "cross_entropy" and targets.is_floating_point() and not soft:
            raise DistillInputError(
                f"--loss cross_entropy needs class labels (or soft labels of the outputs' "
                f"shape), and these targets are {targets.dtype} of shape "
                f"{tuple(targets.shape)}; pass --loss mse or your own --loss file.py:callable"
            )
        try:
            value = loss_fn(outputs, targets)
        except Exception as err:
            raise DistillInputError(
                f"--loss {name}: raised {describe_error(err)} on outputs of shape "
                f"{tuple(outputs.shape)} and targets of dtype {targets.dtype}"
            ) from err
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise DistillInputError(f"--loss {name}: must return the batch's mean loss (a scalar "
                                f"tensor), got {shape}")  # fmt: skip
