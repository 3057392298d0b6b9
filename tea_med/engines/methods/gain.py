"""``gain``: Guided Attention Inference Network with external supervision (Li et al. 2018, "Tell
me where to look", the paper's reference [6]): cross-entropy, attention mining and a loss that
pulls the Grad-CAM attention map towards the lung mask.

    A   = GradCAM(x, y) / max GradCAM(x, y)                   (per image, in [0, 1])
    x*  = x - sigmoid(sigma * (A - theta)) * x                (the attended region erased)
    loss = CE(z, y) + am_weight * mean_b p(y_b | x*_b) + mask_weight * mean((A - m)^2)

with ``sigma = 10`` and ``theta = 0.5`` (Li et al., section 3.1), ``p`` the student's softmax,
``y`` the label and ``m`` the lung mask of the teacher's segmenter. The paper (Supp. F) set every
weight to 1 except the external supervision, 1e4 (COCO-on-Places) and 1e5 (Waterbirds), and
gives none for X-rays; tea_med's defaults are 1 and 1e4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep, mask_teacher
from tea_med.engines.task import TEATask
from tea_med.explain.gradcam import GradCAM

#: the soft-mask sharpness and threshold of GAIN's attention mining
GAIN_SIGMA = 10.0
GAIN_THETA = 0.5


def normalised_attention(cam: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum (an all-zero map stays zero)."""
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)
    return cam / peak.reshape(-1, *([1] * (cam.ndim - 1)))


def erase_attention(x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``x - sigmoid(sigma * (A - theta)) * x``: the image with its attended region removed."""
    return x - torch.sigmoid(GAIN_SIGMA * (attention - GAIN_THETA)) * x


class GAINStep(MethodStep):
    """GAIN with external (lung-mask) supervision (see the module docs)."""

    needs_labels = True

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        am_weight: float = 1.0,
        mask_weight: float = 1e4,
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if am_weight < 0 or mask_weight < 0:
            raise ValueError(
                f"gain_am_weight and gain_mask_weight must be >= 0, got {am_weight!r}, {mask_weight!r}"
            )
        self.teacher = mask_teacher(task, "gain")
        self.am_weight = float(am_weight)
        self.mask_weight = float(mask_weight)
        self.gradcam = GradCAM()
        self.attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert label is not None  # checked by MethodStep
        with torch.no_grad():
            teacher_logits = self.task.teacher(x)
        cam = self.gradcam.explain(self.task.student, x, label, create_graph=True)
        self.attention = normalised_attention(cam.heatmap)
        return teacher_logits, cam.logits

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert label is not None and self.attention is not None
        a = self.attention
        mined = torch.softmax(self.task.student(erase_attention(x, a)), 1)
        mining = mined.gather(1, label.reshape(-1, 1)).mean()
        mask = self.teacher.lung_mask(x.detach())
        supervision = ((a - mask) ** 2).mean()
        return (
            F.cross_entropy(student_logits, label) + self.am_weight * mining + self.mask_weight * supervision
        )


__all__ = ["GAIN_SIGMA", "GAIN_THETA", "GAINStep", "erase_attention", "normalised_attention"]
