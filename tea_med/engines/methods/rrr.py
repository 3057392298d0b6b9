"""``rrr``: Right for the Right Reasons (Ross, Hughes and Doshi-Velez 2017): cross-entropy plus a
penalty on the input gradient of the summed log-probabilities where the image is background.

    loss = CE(z, y) + weight * (1/B) * sum_b sum_{c,h,w} ((1 - m_b) * d/dx_b sum_k log softmax(z_b)_k)^2

``m`` is the lung mask of the teacher's segmenter (the mask the TEA teacher uses), so no mask
is read from the manifest. The paper (Supp. F) used weights of 1e5 (COCO-on-Places) and 1e4
(Waterbirds) and gives none for X-rays; tea_med's default is 1e4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep, mask_teacher
from tea_med.engines.task import TEATask
from tea_med.networks.teacher import TeacherPipeline


def input_gradient_penalty(logits: torch.Tensor, x: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``(1/B) * sum(((background) * d sum log softmax(logits) / dx)^2)``, differentiable (the
    gradient keeps its graph). ``x`` must require grad and ``logits`` depend on it; ``background``
    broadcasts over ``x`` (1 outside the lungs)."""
    log_p = F.log_softmax(logits, dim=1)
    (grad,) = torch.autograd.grad(log_p.sum(), x, create_graph=True)
    return ((background * grad) ** 2).sum() / x.shape[0]


class RRRStep(MethodStep):
    """Cross-entropy plus the background input-gradient penalty (see the module docs)."""

    needs_labels = True
    needs_input_grad = True

    def __init__(
        self, task: TEATask, optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0, weight: float = 1e4
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if weight < 0:
            raise ValueError(f"rrr_weight must be >= 0, got {weight!r}")
        self.weight = float(weight)
        self.teacher: TeacherPipeline = mask_teacher(task, "rrr")

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert label is not None  # checked by MethodStep
        background = 1.0 - self.teacher.lung_mask(x.detach())
        return F.cross_entropy(student_logits, label) + self.weight * input_gradient_penalty(
            student_logits, x, background
        )


__all__ = ["RRRStep", "input_gradient_penalty"]
