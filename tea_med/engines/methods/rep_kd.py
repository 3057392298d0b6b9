"""``rep_kd``: representation distillation through a transplanted last layer (Lee and Lee 2023,
"Debiased distillation by transplanting the last layer", the paper's reference [12]): the
student's classification layer is the teacher's, copied and frozen, and the student learns to
produce the teacher's features at that layer's input.

    loss = weight * (1/(B*D)) * sum_b ||f_s(x_b) - f_t(x_b)||^2

``f`` is the input of the network's last ``nn.Linear`` (DenseNet121: the 1024 pooled
features); the teacher's features are taken as TEA takes its heatmap, through its classifier
on its masked input. The transplant is the student's initialisation
(:func:`tea_med.networks.init_student` copies and freezes the last layer), so the
distilled features feed the teacher's own classifier. The weight is 1 (the paper gives none).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tea_med.engines.methods.base import MethodStep
from tea_med.engines.task import TEATask
from tea_med.networks.student import last_linear
from tea_med.networks.teacher import explained_input, teacher_classifier


@contextmanager
def last_layer_input(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the input of ``model``'s last ``nn.Linear`` during the forwards inside the block."""
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        seen.append(inputs[0])

    handle = last_linear(model).register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def feature_distillation_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the features (teacher side detached)."""
    return F.mse_loss(student_features, teacher_features.detach())


def distillation_features(task: TEATask, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward of each network on ``x``: the teacher's logits and last-layer input (no graph;
    through its classifier on its masked input) and the student's (with a graph): keys
    ``teacher_logits``, ``teacher_features``, ``student_logits``, ``student_features``."""
    with torch.no_grad():
        network, seen, _ = explained_input(task.teacher, x)
        with last_layer_input(network) as t_feat:
            teacher_logits = network(seen)
    with last_layer_input(task.student) as s_feat:
        student_logits = task.student(x)
    return {
        "teacher_logits": teacher_logits,
        "teacher_features": t_feat[-1],
        "student_logits": student_logits,
        "student_features": s_feat[-1],
    }


class RepKDStep(MethodStep):
    """Feature matching at the transplanted last layer's input (see the module docs)."""

    def __init__(
        self, task: TEATask, optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0, weight: float = 1.0
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if not weight > 0:
            raise ValueError(f"rep_kd_weight must be > 0, got {weight!r}")
        teacher_last = last_linear(teacher_classifier(task.teacher))
        student_last = last_linear(task.student)
        if teacher_last.weight.shape != student_last.weight.shape:
            raise ValueError(
                "rep_kd transplants the teacher's last layer: the student's last nn.Linear must have the "
                f"teacher's shape {tuple(teacher_last.weight.shape)}, got {tuple(student_last.weight.shape)}"
            )
        self.weight = float(weight)
        self.features: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = distillation_features(self.task, x)
        self.features = (out["student_features"], out["teacher_features"])
        return out["teacher_logits"], out["student_logits"]

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert self.features is not None  # set by forward
        return self.weight * feature_distillation_loss(*self.features)


__all__ = ["RepKDStep", "distillation_features", "feature_distillation_loss", "last_layer_input"]
