"""``isnet``: background relevance minimisation in LRP heatmaps (Bassi, Dertkigil and Cavalli
2024, "Improving deep neural network generalization and robustness to background bias via
layer-wise relevance propagation optimization", the paper's reference [3]).

The student's LRP-ε heatmap ``H`` of one class per image (drawn as TEA draws it: its own
prediction with probability 0.5, another class otherwise, the stochastic ISNet's choice) is
scaled by its standard deviation; its absolute values on the background ``1 - m`` (the
teacher's lung mask) are pooled per channel by global weighted ranked pooling (GWRP: sorted in
descending order, weighted by ``d ** rank``, divided by the sum of the weights) and squashed:

    l_bc = GWRP_d(|H_bc| / sqrt(var(H_b) + 1e-4) * (1 - m_b))
    L_bg = mean_{b,c} -log(1 - l_bc / (l_bc + 1))
    loss = (1 - P) * CE(z, y) + P * L_bg

``P`` weighs the heatmap loss against the classification loss as in the ISNet. The paper's
Supp. F gives d = 0.96 and P = 0.95 (COCO-on-Places), d = 0.996 and P = 0.99 (Waterbirds) for
the Faster-ISNet variant, whose foreground term tea_med does not implement; tea_med's defaults
are d = 0.96, P = 0.95 and ε = 0.01, the ISNet's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep, mask_teacher
from tea_med.engines.sampling import sample_targets
from tea_med.engines.task import TEATask
from tea_med.explain import LRPEpsilon


def ranked_pooling(values: torch.Tensor, decay: float) -> torch.Tensor:
    """Global weighted ranked pooling of ``[..., N]``: ``sum_i d^i v_(i) / sum_i d^i`` with
    ``v_(0) >= v_(1) >= ...`` (the ISNet's GWRP)."""
    ranked = values.sort(dim=-1, descending=True).values
    weights = decay ** torch.arange(values.shape[-1], dtype=values.dtype, device=values.device)
    return (ranked * weights).sum(-1) / weights.sum()


def background_relevance_loss(heatmap: torch.Tensor, mask: torch.Tensor, decay: float = 0.96) -> torch.Tensor:
    """``mean_{b,c} -log(1 - l_bc / (l_bc + 1))`` with ``l_bc`` the ranked pooling (decay
    ``decay``) of the standard-deviation-scaled absolute relevance of image ``b``, channel ``c``
    outside ``mask`` (``[B, 1, *spatial]``, 1 = lung)."""
    scale = torch.sqrt(heatmap.flatten(1).var(1, unbiased=True) + 1e-4).reshape(
        -1, *([1] * (heatmap.ndim - 1))
    )
    outside = (heatmap.abs() / scale * (1.0 - mask)).flatten(2)
    pooled = ranked_pooling(outside, decay)
    squashed = (pooled / (pooled + 1.0)).clamp(0.0, 1.0 - 1e-4)
    return -torch.log1p(-squashed).mean()


class ISNetStep(MethodStep):
    """Cross-entropy plus the LRP background-relevance loss (see the module docs)."""

    needs_labels = True

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        weight: float = 0.95,
        eps: float = 0.01,
        decay: float = 0.96,
    ) -> None:
        super().__init__(task, optimizer, max_grad_norm)
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"isnet_weight (P) must be in [0, 1), got {weight!r}")
        if not eps > 0:
            raise ValueError(f"isnet_eps must be > 0, got {eps!r}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"isnet_d (the ranked-pooling decay) must be in (0, 1], got {decay!r}")
        self.teacher = mask_teacher(task, "isnet")
        self.decay = float(decay)
        self.weight = float(weight)
        self.eps = float(eps)
        self.lrp = LRPEpsilon(eps=self.eps)

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert label is not None  # checked by MethodStep
        target = sample_targets(student_logits, self.task.generator)
        heatmap = self.lrp.explain(self.task.student, x, target, eps=self.eps, create_graph=True).heatmap
        mask = self.teacher.lung_mask(x.detach())
        return (1.0 - self.weight) * F.cross_entropy(student_logits, label) + self.weight * (
            background_relevance_loss(heatmap, mask, self.decay)
        )


__all__ = ["ISNetStep", "background_relevance_loss", "ranked_pooling"]
