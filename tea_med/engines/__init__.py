"""Training and inference steps plugged into MONAI engines, and their output adapters."""

from tea_med.engines.outputs import (
    ItemAverage,
    class_scores_and_index,
    per_item,
    student_scores_and_teacher_class,
)
from tea_med.engines.recalibration import BatchNormRecalibration, recalibrate_batchnorm
from tea_med.engines.resume import RandomStates, ResumeCheckpoint, latest_checkpoint
from tea_med.engines.tea import (
    BN_MODES,
    TEAEpochMetrics,
    TEATask,
    TEATrainStep,
    TEAValidationStep,
    lower_is_better,
)

__all__ = [
    "BN_MODES",
    "BatchNormRecalibration",
    "ItemAverage",
    "RandomStates",
    "ResumeCheckpoint",
    "TEAEpochMetrics",
    "TEATask",
    "TEATrainStep",
    "TEAValidationStep",
    "class_scores_and_index",
    "latest_checkpoint",
    "lower_is_better",
    "per_item",
    "recalibrate_batchnorm",
    "student_scores_and_teacher_class",
]
