"""The TEA student: initialised from the teacher's classifier, last layer copied and frozen."""

from __future__ import annotations

import copy

from torch import nn

from tea_med.networks.batchnorm import use_fast_double_backward
from tea_med.networks.checkpoints import load_weights
from tea_med.networks.classifiers import densenet121
from tea_med.networks.segmenter import lung_segmenter
from tea_med.networks.teacher import TeacherPipeline

STUDENT_INITS = ("copy", "random")


def teacher_classifier(teacher: nn.Module) -> nn.Module:
    """The classifier inside a :class:`TeacherPipeline`, or ``teacher`` itself."""
    return teacher.classifier if isinstance(teacher, TeacherPipeline) else teacher


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in module order (the classification layer)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to copy and freeze")
    return linears[-1]


def init_student(teacher: nn.Module, mode: str = "copy", freeze_last: bool = True) -> nn.Module:
    """A student for TEA built from ``teacher``'s classifier (METHOD.md section 6).

    Args:
        teacher: a :class:`TeacherPipeline` or any classifier.
        mode: ``"copy"`` (all weights copied; the paper's X-ray setting) or ``"random"``
            (re-initialised except the last linear layer, which is copied; Coloured-MNIST).
        freeze_last: freeze the last linear layer (the paper freezes it).

    The student trains with batch-norm's fast double backward (same state-dict keys).
    """
    if mode not in STUDENT_INITS:
        raise ValueError(f"mode must be one of {STUDENT_INITS}, got {mode!r}")
    student = copy.deepcopy(teacher_classifier(teacher)).train()
    student.requires_grad_(True)
    if mode == "random":
        last = last_linear(student)
        for m in student.modules():
            if m is not last and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    if freeze_last:
        last_linear(student).requires_grad_(False)
    return use_fast_double_backward(student)


def load_teacher(
    ckpt_path: str,
    num_classes: int = 3,
    segmenter_profile: str = "paper",
    threshold: float = 0.4,
) -> TeacherPipeline:
    """The frozen teacher saved by the ``tea_teacher`` bundle (``models/model.pt``), in eval mode."""
    teacher = TeacherPipeline(
        lung_segmenter(segmenter_profile), densenet121(num_classes=num_classes), threshold
    )
    load_weights(teacher, ckpt_path)
    return teacher.eval().requires_grad_(False)
