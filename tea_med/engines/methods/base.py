"""What every comparison method's training step shares with :class:`~tea_med.engines.TEATrainStep`.

A method is an ``iteration_update`` for MONAI's ``SupervisedTrainer`` that computes its loss from
the batch, the student and (frozen) the teacher of a :class:`~tea_med.engines.TEATask`, then
clips and steps like TEA does. Its output carries the same keys as TEA's (``loss``,
``agreement``, ``pred``, ``teacher``, ``label``), so the student bundle's handlers, metrics,
checkpoints, MLflow tracking and resumption work unchanged for every method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from ignite.engine import Engine

from tea_med.engines.distributed import average_gradients
from tea_med.engines.steps import engine_device, finish_iteration, plain_tensor
from tea_med.engines.task import TEATask
from tea_med.networks.teacher import TeacherPipeline


def mask_teacher(task: TEATask, method: str) -> TeacherPipeline:
    """The task's teacher as a segmenter + classifier, whose lung masks ``method`` reads."""
    if not isinstance(task.teacher, TeacherPipeline):
        raise ValueError(
            f"{method} needs lung masks: the teacher must be a segmenter + classifier (TeacherPipeline), "
            f"got {type(task.teacher).__name__}"
        )
    return task.teacher


class MethodStep(ABC):
    """Base of the comparison methods' steps.

    Args:
        task: the :class:`TEATask` whose student is trained (its teacher stays frozen).
        optimizer: the student's optimiser.
        max_grad_norm: gradient-norm clipping of the student.
    """

    #: whether the method needs the manifest's labels
    needs_labels = False
    #: whether the loss differentiates the student's output with respect to its input
    needs_input_grad = False
    #: the batch key of each image's group (the manifest's ``source``) for methods over groups;
    #: ``None``: groups are not read
    group_key: str | None = None

    def __init__(self, task: TEATask, optimizer: torch.optim.Optimizer, max_grad_norm: float = 1.0) -> None:
        if task.teacher_ce_weight is not None:
            raise ValueError(
                f"{type(self).__name__} trains the student only: set warmup_epochs 0 (no co-training)"
            )
        self.task = task
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        #: the groups of the current batch and the engine's iteration, for :meth:`loss`
        self.batch_groups: list[str] = []
        self.iteration = 0

    @abstractmethod
    def loss(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
    ) -> torch.Tensor:
        """The method's scalar loss for one batch (differentiable w.r.t. the student)."""

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(teacher_logits, student_logits)`` of the batch: the frozen teacher without a graph,
        the student with one. Methods that read more of either forward override this."""
        with torch.no_grad():
            teacher_logits = self.task.teacher(x)
        return teacher_logits, self.task.student(x)

    def __call__(self, engine: Engine, batch: dict[str, Any]) -> dict[str, Any]:
        if self.group_key is not None:
            if self.group_key not in batch:
                name = type(self).__name__
                raise ValueError(
                    f"{name} needs each training record's '{self.group_key}' (its source hospital) in the "
                    "manifest; the batch has none"
                )
            self.batch_groups = [str(g) for g in batch[self.group_key]]
        self.iteration = int(getattr(engine.state, "iteration", 0) or 0)
        device = engine_device(engine, self.task)
        x = plain_tensor(batch["image"], device)
        label = plain_tensor(batch["label"], device).long().reshape(-1) if "label" in batch else None
        if self.needs_labels and label is None:
            raise ValueError(
                f"{type(self).__name__} needs labels: the manifest's training records have no 'label'"
            )
        self.task.train()
        if self.needs_input_grad:
            x = x.detach().requires_grad_(True)
        teacher_logits, student_logits = self.forward(x, label)
        loss = self.loss(x, label, student_logits, teacher_logits)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        average_gradients(params)  # over torch.distributed processes, when there are several
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        agreement = (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean()
        result: dict[str, Any] = {
            "image": x,
            "pred": student_logits.detach(),
            "teacher": teacher_logits.detach(),
            "loss": loss.detach(),
            "agreement": agreement.detach(),
        }
        if label is not None:
            result["label"] = label
        return finish_iteration(engine, result)
