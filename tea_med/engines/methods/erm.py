"""``erm``: empirical risk minimisation, the student trained with cross-entropy on the labels
(the paper's "standard classifier" baseline, with the TEA student's initialisation and budget)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.engines.methods.base import MethodStep


class ERMStep(MethodStep):
    """Cross-entropy of the student's logits against the labels (mean over the batch)."""

    needs_labels = True

    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        assert label is not None  # checked by MethodStep
        return F.cross_entropy(student_logits, label)
