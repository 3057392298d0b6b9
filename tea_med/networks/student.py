"""The TEA student: initialised from the teacher's classifier, last layer copied and frozen."""

from __future__ import annotations

import copy

from torch import nn

from tea_med.networks.double_backward import use_fast_double_backward
from tea_med.networks.teacher import teacher_classifier

STUDENT_INITS = ("copy", "random")


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in module order (the classification layer)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to copy and freeze")
    return linears[-1]


def init_student(teacher: nn.Module, mode: str = "copy", freeze_last: bool = True) -> nn.Module:
    """A student for TEA built from ``teacher``'s classifier (docs/method.md, section 6).

    Args:
        teacher: a :class:`TeacherPipeline` or any classifier.
        mode: ``"copy"`` (all weights copied; the paper's X-ray setting) or ``"random"``
            (re-initialised except the last linear layer, which is copied; Coloured-MNIST).
        freeze_last: freeze the last linear layer (the paper freezes it).

    The student trains with the fast double backward of batch-norm and DenseNet concatenation
    (:func:`use_fast_double_backward`; same state-dict keys).
    """
    if mode not in STUDENT_INITS:
        raise ValueError(f"mode must be one of {STUDENT_INITS}, got {mode!r}")
    student = copy.deepcopy(teacher_classifier(teacher)).train()
    student.requires_grad_(True)
    if mode == "random":
        last = last_linear(student)
        for m in student.modules():
            if m is not last and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
    if freeze_last:
        last_linear(student).requires_grad_(False)
    return use_fast_double_backward(student)
