r"""Cross-entropy and the knowledge-distillation loss, per example; token losses and sequence KD.

Losses return one value per example and leave the reduction to the caller (the batch
mean, in training), as optax does: with the KL summed over classes *per example*, the
batch mean of these values is exactly PyTorch's ``kl_div(..., reduction="batchmean")``,
and the classic mistakes (a forgotten :math:`T^2`, ``reduction="mean"`` dividing by the
number of classes too) cannot be written silently.

The KD loss (Hinton et al. 2015), per example:

.. math::
    \ell = (1 - \alpha)\,\mathrm{CE}(z_s, y)
         + \alpha\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T)\big)

Token losses take logits ``(B, L, V)`` and labels ``(B, L)`` whose ``-100`` entries
(:data:`IGNORE_INDEX`, padding) are not counted, and return the mean over the *counted*
tokens of the batch, as Hugging Face's losses do. Each carries ``count(labels) -> int``,
the tokens it averages over (and ``correct(logits, labels)``, the hits among them), so
that a measurement over several batches weights each batch by its counted tokens
(``landscape._types.batch_weight``): the mean over all counted tokens, however the
sequences are batched and padded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from distill.errors import DistillInputError

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


IGNORE_INDEX = -100
"""Labels of this value (padding) are not counted by the token losses, as in PyTorch and HF."""


def _token_mean(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the counted positions, divided by their count (0 if none)."""
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )  # fmt: skip
    return total / max(int((labels != IGNORE_INDEX).sum()), 1)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Next-token cross-entropy, the mean over counted tokens.

    Position :math:`t` of the logits predicts ``labels[:, t + 1]``. ``labels`` are the
    inputs themselves (``-100`` where padded), as Hugging Face's causal LMs take them: the
    shift happens here. ``causal_lm_loss.count(labels)`` is the number of
    tokens averaged over, ``(labels[:, 1:] != -100).sum()``, and
    ``causal_lm_loss.correct(logits, labels)`` how many of them the top logit predicts.
    """
    return _token_mean(logits[:, :-1], labels[:, 1:])


def token_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy, the mean over counted tokens (``labels != -100``)."""
    return _token_mean(logits, labels)


def _token_hits(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Counted positions whose top logit is the label."""
    counted = labels != IGNORE_INDEX
    return int((logits.argmax(dim=-1)[counted] == labels[counted]).sum())


causal_lm_loss.count = lambda labels: int((labels[:, 1:] != IGNORE_INDEX).sum())
token_ce_loss.count = lambda labels: int((labels != IGNORE_INDEX).sum())
causal_lm_loss.correct = lambda logits, labels: _token_hits(logits[:, :-1], labels[:, 1:])
token_ce_loss.correct = _token_hits


def sequence_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    config: KDConfig,
    shift: bool = True,
) -> torch.Tensor:
    r"""Token-level KD: :func:`kd_loss` at every counted token, the mean over them.

    .. math::
        \frac{1}{M} \sum_{(i,t)\ \mathrm{counted}} (1 - \alpha)\,\mathrm{CE}(z^s_{it}, y_{it})
        + \alpha\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z^t_{it}/T)\,\|\,
        \mathrm{softmax}(z^s_{it}/T)\big)

    Args:
        student_logits: ``(B, L, V)``.
        teacher_logits: ``(B, L, V)``, detached here.
        labels: ``(B, L)``, ``-100`` at tokens not counted (padding); with ``alpha = 1``
            they only give the mask.
        config: Temperature and alpha, with the meaning of :data:`ALPHA_MEANING`.
        shift: As :func:`causal_lm_loss` (position t against label t + 1); False as
            :func:`token_ce_loss`.
    """
    if shift:
        student_logits, teacher_logits = student_logits[:, :-1], teacher_logits[:, :-1]
        labels = labels[:, 1:]
    counted = labels != IGNORE_INDEX
    per_token = kd_loss(student_logits[counted], teacher_logits[counted], labels[counted], config)
    return per_token.sum() / max(int(counted.sum()), 1)
