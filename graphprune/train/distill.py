"""Knowledge distillation: the student matches the teacher's softened outputs as well as the labels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distill_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    T: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """(1 - alpha) * CE(student, targets) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's (Hinton et al. 2015).
    The KL is averaged over the batch, like the cross-entropy.
    """
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if alpha == 0.0:
        return ce
    kl = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * ce + alpha * T * T * kl
