"""LRP-ready networks, the lung segmenter, the teacher pipeline and the student.

Names are imported lazily (PEP 562), so a workstation that runs only the student imports
neither the segmenter nor the teacher code.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FastBatchNorm1d": "batchnorm",
    "FastBatchNorm2d": "batchnorm",
    "FastBatchNorm3d": "batchnorm",
    "use_fast_double_backward": "batchnorm",
    "load_weights": "checkpoints",
    "LRPResNetBlock": "classifiers",
    "LRPResNetBottleneck": "classifiers",
    "densenet121": "classifiers",
    "resnet18": "classifiers",
    "resnet34": "classifiers",
    "resnet50": "classifiers",
    "lrp_ready": "lrp_ready",
    "probe_input": "lrp_ready",
    "NETWORKS": "registry",
    "build_network": "registry",
    "SEGMENTER_PROFILES": "segmenter",
    "lung_segmenter": "segmenter",
    "STUDENT_INITS": "student",
    "init_student": "student",
    "last_linear": "student",
    "load_teacher": "teacher",
    "teacher_classifier": "teacher",
    "TeacherPipeline": "teacher",
    "explained_input": "teacher",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tea_med.networks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tea_med.networks.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
