"""A stand-in for ``TEATask`` with what ``HeatmapFigureLogger`` reads of one (tests of tracking)."""

from __future__ import annotations

import torch
from torch import nn


class StubTask:
    """``student``, ``eval()``, ``class_names`` and ``validation_losses``: the student's logits
    as the teacher's, the images as the teacher's heatmaps and their negatives as the student's."""

    def __init__(self, student: nn.Module) -> None:
        self.student = student
        self.class_names = ["first", "second"]

    def eval(self) -> StubTask:
        self.student.eval()
        return self

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "teacher_logits": self.student(images),
            "teacher_heatmap": images,
            "student_heatmap": -images,
            "loss_per_sample": torch.zeros(len(images)),
        }
