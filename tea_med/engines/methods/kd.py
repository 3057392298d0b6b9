"""``kd``: output distillation (Hinton, Vinyals and Dean 2015, "Distilling the knowledge in a
neural network", the paper's reference [11]): the student matches the teacher's softened class
probabilities.

    loss = weight * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + ce_weight * CE(z_s, y)

averaged over the batch. ``T^2`` keeps the gradient's scale independent of the temperature
(Hinton et al., section 2). The paper gives no temperature for its output-distillation
baseline; tea_med's default is T = 4 with weight 1 and no label term (distillation alone, as
TEA uses explanations alone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep
from tea_med.engines.task import TEATask


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, mean over the batch."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits / t, dim=1)
    log_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * t * t


class KDStep(MethodStep):
    """Output distillation (see the module docs).

    Args:
        temperature: T > 0.
        weight: weight of the distillation term.
        ce_weight: weight of the cross-entropy on the labels (0: labels are not read).
    """

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        temperature: float = 4.0,
        weight: float = 1.0,
        ce_weight: float = 0.0,
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if not temperature > 0:
            raise ValueError(f"kd_temperature must be > 0, got {temperature!r}")
        if weight < 0 or ce_weight < 0:
            raise ValueError(f"kd_weight and kd_ce_weight must be >= 0, got {weight!r} and {ce_weight!r}")
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.ce_weight = float(ce_weight)
        self.needs_labels = self.ce_weight > 0

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        loss = self.weight * distillation_loss(student_logits, teacher_logits, self.temperature)
        if self.ce_weight > 0:
            assert label is not None  # checked by MethodStep
            loss = loss + self.ce_weight * F.cross_entropy(student_logits, label)
        return loss
