"""``tea+kd`` and ``tea+rep_kd``: TEA with a distillation loss added, the paper's "explanations
alone or not alone" ablations (Table 5, bottom). The student's loss is the TEA loss plus

- ``tea+kd``: ``weight * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` (:mod:`.kd`);
- ``tea+rep_kd``: ``weight * mean((f_s - f_t)^2)`` at the transplanted last layer's input
  (:mod:`.rep_kd`).

The distillation term reads a plain forward of the student (the TEA term's forward runs under
the explainer's rules) and a forward of the teacher, both on the batch TEA explains. The paper
gives no weight for these terms; tea_med's default is 1 for both.
"""

from __future__ import annotations

from typing import Any

import torch

from tea_med.engines.methods.kd import distillation_loss
from tea_med.engines.methods.rep_kd import distillation_features, feature_distillation_loss
from tea_med.engines.steps import TEATrainStep
from tea_med.engines.task import TEATask


class TEAPlusKDStep(TEATrainStep):
    """TEA loss plus output distillation (see the module docs)."""

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        weight: float = 1.0,
        temperature: float = 4.0,
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if not weight > 0 or not temperature > 0:
            raise ValueError(
                f"tea+kd needs kd_weight > 0 and kd_temperature > 0, got {weight!r}, {temperature!r}"
            )
        self.weight = float(weight)
        self.temperature = float(temperature)

    def extra_loss(self, x: torch.Tensor, label: torch.Tensor | None, out: dict[str, Any]) -> torch.Tensor:
        return self.weight * distillation_loss(self.task.student(x), out["teacher_logits"], self.temperature)


class TEAPlusRepKDStep(TEATrainStep):
    """TEA loss plus feature distillation at the last layer's input (see the module docs)."""

    def __init__(
        self, task: TEATask, optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0, weight: float = 1.0
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if not weight > 0:
            raise ValueError(f"tea+rep_kd needs rep_kd_weight > 0, got {weight!r}")
        self.weight = float(weight)

    def extra_loss(self, x: torch.Tensor, label: torch.Tensor | None, out: dict[str, Any]) -> torch.Tensor:
        out = distillation_features(self.task, x)
        return self.weight * feature_distillation_loss(out["student_features"], out["teacher_features"])


__all__ = ["TEAPlusKDStep", "TEAPlusRepKDStep"]
