"""``group_dro``: group distributionally robust optimisation (Sagawa, Koh, Hashimoto and Liang 2020,
"Distributionally robust neural networks", their online algorithm), with the groups the source
hospitals of the manifest's ``source`` field.

Each step computes the mean cross-entropy ``L_g`` of every group present in the batch, raises
that group's weight ``q_g <- q_g * exp(step_size * L_g)``, renormalises ``q`` and minimises
``sum_g q_g L_g``: the worst group gets the most weight. A group met for the first time joins
with the weight ``1 / (number of groups)``. The weights are part of the step's state, saved with
each resumable checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep
from tea_med.engines.task import TEATask


class GroupDROStep(MethodStep):
    """The online Group DRO step (see the module docs).

    Args:
        step_size: ``eta`` of the exponentiated-gradient update of the group weights (> 0).
        group_key: the batch key holding each image's group (the manifest's ``source``).
    """

    needs_labels = True

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        step_size: float = 0.01,
        group_key: str = "source",
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if not step_size > 0:
            raise ValueError(f"group_dro_step_size must be > 0, got {step_size!r}")
        self.step_size = float(step_size)
        self.group_key = group_key
        self.groups: list[str] = []
        self.weights = torch.zeros(0, dtype=torch.float64)

    def _index(self, name: str) -> int:
        if name not in self.groups:
            self.groups.append(name)
            n = len(self.groups)
            self.weights = torch.cat(
                [self.weights * (n - 1) / n, torch.tensor([1.0 / n], dtype=torch.float64)]
            )
        return self.groups.index(name)

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert label is not None  # checked by MethodStep
        per_image = F.cross_entropy(student_logits, label, reduction="none")
        index = torch.tensor([self._index(g) for g in self.batch_groups], device=per_image.device)
        present = torch.unique(index)
        group_loss = torch.stack([per_image[index == g].mean() for g in present])
        with torch.no_grad():  # exponentiated-gradient ascent on the weights of the groups present
            w = self.weights.clone()
            w[present.cpu()] *= torch.exp(self.step_size * group_loss.detach().double().cpu())
            self.weights = w / w.sum()
        q = self.weights[present.cpu()].to(group_loss)
        return (q * group_loss).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"groups": list(self.groups), "weights": self.weights.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groups = list(state["groups"])
        self.weights = torch.as_tensor(state["weights"], dtype=torch.float64).clone()


__all__ = ["GroupDROStep"]
