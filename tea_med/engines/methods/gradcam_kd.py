"""``gradcam_kd``: explanation-enhanced knowledge distillation (Parchami-Araghi et al. 2024, "Good
teachers explain", the paper's reference [14]): output distillation plus a loss that makes the
student's Grad-CAM map resemble the teacher's.

    loss = cam_weight * (1/B) * sum_b (1 - cos(G_s(x_b, c_b), G_t(x_b, c_b))) + kd_weight * KD_T(z_s, z_t)

``G`` is Grad-CAM of class ``c_b``, the teacher's prediction (the teacher's map taken as TEA
takes its heatmap: through its classifier, on its masked input), ``cos`` the cosine similarity
of the flattened maps and ``KD_T`` the output distillation of :mod:`~tea_med.engines.methods.kd`.
Weights 1 and 0.1 are the paper's (Supp. F, X-ray and COCO-on-Places); T = 4 as for ``kd``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep
from tea_med.engines.methods.kd import distillation_loss
from tea_med.engines.task import TEATask
from tea_med.explain.gradcam import GradCAM
from tea_med.networks.teacher import explained_input


def map_dissimilarity(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """``mean_b (1 - cos(flatten(student_map_b), flatten(teacher_map_b)))``; an all-zero map counts
    as orthogonal to everything (cosine 0)."""
    s, t = student_map.flatten(1), teacher_map.detach().flatten(1)
    return (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-12)).mean()


class GradCAMKDStep(MethodStep):
    """Grad-CAM matching plus output distillation (see the module docs)."""

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        cam_weight: float = 1.0,
        kd_weight: float = 0.1,
        temperature: float = 4.0,
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if cam_weight < 0 or kd_weight < 0 or not temperature > 0:
            raise ValueError(
                f"gradcam_kd needs cam_weight >= 0, kd_weight >= 0 and temperature > 0, got "
                f"{cam_weight!r}, {kd_weight!r}, {temperature!r}"
            )
        self.cam_weight = float(cam_weight)
        self.kd_weight = float(kd_weight)
        self.temperature = float(temperature)
        self.gradcam = GradCAM()

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        target = teacher_logits.argmax(1)
        network, seen, _ = explained_input(self.task.teacher, x)
        teacher_map = self.gradcam.explain(network, seen, target).heatmap
        student = self.gradcam.explain(self.task.student, x, target, create_graph=True)
        return self.cam_weight * map_dissimilarity(
            student.heatmap, teacher_map
        ) + self.kd_weight * distillation_loss(student.logits, teacher_logits, self.temperature)


__all__ = ["GradCAMKDStep", "map_dissimilarity"]
