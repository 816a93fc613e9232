"""KD loss against hand-computed values and its gradient against soft-label CE."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import DistillInputError
from distill.losses import (
    IGNORE_INDEX,
    KDConfig,
    causal_lm_loss,
    cross_entropy,
    kd_loss,
    kl_to_teacher,
    sequence_kd_loss,
    soft_cross_entropy,
    token_ce_loss,
)


def _kl_by_hand(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation_with_t_squared_and_batchmean():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], dtype=torch.float64)
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    targets = torch.tensor([0, 1])
    t, alpha = 4.0, 0.3
    per_example = kd_loss(student, teacher, targets, KDConfig(t, alpha))
    for i in range(2):
        kl = _kl_by_hand(_softmax(teacher[i].tolist(), t), _softmax(student[i].tolist(), t))
        ce = -math.log(_softmax(student[i].tolist(), 1.0)[targets[i]])
        assert per_example[i].item() == pytest.approx((1 - alpha) * ce + alpha * t * t * kl, 1e-12)
    # The batch mean of the per-example values is torch's batchmean KL (not 'mean').
    reference = F.kl_div(
        F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="batchmean"
    )
    pure = kd_loss(student, teacher, targets, KDConfig(t, 1.0)).mean()
    assert pure.item() == pytest.approx(t * t * reference.item(), 1e-12)


def test_alpha_ends():
    student, teacher = (
        torch.randn(5, 4, dtype=torch.float64),
        torch.randn(5, 4, dtype=torch.float64),
    )
    targets = torch.randint(0, 4, (5,))
    plain = kd_loss(student, teacher, targets, KDConfig(2.0, 0.0))
    torch.testing.assert_close(plain, cross_entropy(student, targets))
    pure = kd_loss(student, teacher, targets, KDConfig(2.0, 1.0))
    torch.testing.assert_close(pure, 4.0 * kl_to_teacher(student, teacher, 2.0))


def test_kd_gradient_at_t1_equals_soft_label_cross_entropy_gradient():
    student = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 5, dtype=torch.float64)
    targets = torch.zeros(6, dtype=torch.long)
    (g_kd,) = torch.autograd.grad(
        kd_loss(student, teacher, targets, KDConfig(1.0, 1.0)).sum(), student
    )
    soft = soft_cross_entropy(student, F.softmax(teacher, -1)).sum()
    (g_ce,) = torch.autograd.grad(soft, student)
    torch.testing.assert_close(g_kd, g_ce)


def test_teacher_receives_no_gradient():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    kd_loss(student, teacher, torch.zeros(3, dtype=torch.long), KDConfig()).sum().backward()
    assert teacher.grad is None


@pytest.mark.parametrize(("t", "alpha"), [(0.0, 1.0), (-1.0, 0.5), (4.0, 2.0), (4.0, -0.1)])
def test_invalid_settings_are_refused(t, alpha):
    with pytest.raises(DistillInputError):
        KDConfig(t, alpha)


def test_alpha_meaning_recorded():
    meta = KDConfig(4.0, 1.0).to_metadata()
    assert meta["temperature"] == 4.0 and meta["alpha"] == 1.0
    assert "alpha weights the distillation term" in meta["alpha_meaning"]


def test_the_analysis_losses_have_the_fisher_s_likelihoods():
    """``--loss mse`` declares itself a Gaussian likelihood; landscape does not know distill."""
    from distill.sources import ANALYSIS_LOSSES
    from landscape.operators.fisher import likelihood_of

    assert likelihood_of(ANALYSIS_LOSSES["mse"]) == "gaussian"
    assert likelihood_of(ANALYSIS_LOSSES["cross_entropy"]) == "categorical"


def test_token_losses_are_means_over_counted_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 3, 4], [0, 4, IGNORE_INDEX, IGNORE_INDEX]])
    per_token = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), ignore_index=-100,
                                reduction="none").reshape(2, 4)  # fmt: skip
    assert token_ce_loss(logits, labels).item() == pytest.approx(
        float(per_token[labels != IGNORE_INDEX].mean()), rel=1e-14
    )
    assert token_ce_loss.count(labels) == 6
    # causal: position t predicts token t + 1 (the labels are the inputs, as in HF)
    shifted = [-math.log(_softmax(logits[i, t].tolist(), 1.0)[labels[i, t + 1]])
               for i, t in ((0, 0), (0, 1), (0, 2), (1, 0))]  # fmt: skip
    assert causal_lm_loss(logits, labels).item() == pytest.approx(sum(shifted) / 4, rel=1e-12)
    assert causal_lm_loss.count(labels) == 4


def test_sequence_kd_loss_matches_hand_computation_over_counted_tokens():
    torch.manual_seed(1)
    student = torch.randn(2, 3, 4, dtype=torch.float64)
    teacher = torch.randn(2, 3, 4, dtype=torch.float64)
    labels = torch.tensor([[2, 1, 3], [0, IGNORE_INDEX, IGNORE_INDEX]])
    t, alpha = 2.0, 0.25
    by_hand = []
    for i, j in ((0, 0), (0, 1)):  # logits at j against label j + 1; (1, 0) meets -100
        s, z = student[i, j].tolist(), teacher[i, j].tolist()
        kl = _kl_by_hand(_softmax(z, t), _softmax(s, t))
        ce = -math.log(_softmax(s, 1.0)[labels[i, j + 1]])
        by_hand.append((1 - alpha) * ce + alpha * t * t * kl)
    value = sequence_kd_loss(student, teacher, labels, KDConfig(t, alpha))
    assert value.item() == pytest.approx(sum(by_hand) / 2, rel=1e-12)
    # without the shift every counted position counts; alpha = 1 is T^2 KL only
    pure = sequence_kd_loss(student, teacher, labels, KDConfig(t, 1.0), shift=False)
    counted = [(0, 0), (0, 1), (0, 2), (1, 0)]
    kls = [_kl_by_hand(_softmax(teacher[i, j].tolist(), t), _softmax(student[i, j].tolist(), t))
           for i, j in counted]  # fmt: skip
    assert pure.item() == pytest.approx(t * t * sum(kls) / 4, rel=1e-12)
