"""``irm``: invariant risk minimisation, IRMv1 (Arjovsky, Bottou, Gulrajani and Lopez-Paz 2019),
with the environments the source hospitals of the manifest's ``source`` field.

    loss = mean_e CE_e + w * mean_e (d/ds CE_e(s * z) at s = 1)^2

over the environments ``e`` present in the batch. The weight is 1 for the first
``anneal_steps`` iterations and ``weight`` afterwards, when the whole loss is divided by
``weight`` to keep its scale, as in the authors' Coloured-MNIST code (whose defaults, 1e4 after
100 iterations, are tea_med's; the TEA paper gives none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep
from tea_med.engines.task import TEATask


def irm_penalty(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``(d/ds CE(s * logits, label) at s = 1)^2``, differentiable with respect to the logits."""
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits * scale, label), [scale], create_graph=True)
    return grad**2


class IRMStep(MethodStep):
    """IRMv1 over the source hospitals (see the module docs).

    Args:
        weight: the penalty weight after the anneal (>= 0).
        anneal_steps: iterations with weight 1 first.
        group_key: the batch key holding each image's environment (the manifest's ``source``).
    """

    needs_labels = True

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        weight: float = 1e4,
        anneal_steps: int = 100,
        group_key: str = "source",
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if weight < 0 or anneal_steps < 0:
            raise ValueError(
                f"irm_weight and irm_anneal_steps must be >= 0, got {weight!r} and {anneal_steps!r}"
            )
        self.weight = float(weight)
        self.anneal_steps = int(anneal_steps)
        self.group_key = group_key

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert label is not None  # checked by MethodStep
        names = sorted(set(self.batch_groups))
        risks, penalties = [], []
        for name in names:
            idx = torch.tensor([i for i, g in enumerate(self.batch_groups) if g == name], device=label.device)
            risks.append(F.cross_entropy(student_logits[idx], label[idx]))
            penalties.append(irm_penalty(student_logits[idx], label[idx]))
        weight = self.weight if self.iteration > self.anneal_steps else 1.0
        loss = torch.stack(risks).mean() + weight * torch.stack(penalties).mean()
        return loss / weight if weight > 1.0 else loss


__all__ = ["IRMStep", "irm_penalty"]
