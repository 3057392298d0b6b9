"""TEA training plugged into MONAI engines: the task, its per-image draws, the steps, output
adapters for ignite metrics, batch-norm recalibration (the student's before validation, the
teacher's for the training chain), validation of the last epoch, resumable training and the CPU
allocator's settings for training."""

from tea_med.engines.allocator import tune_cpu_allocator
from tea_med.engines.outputs import (
    ItemAverage,
    class_scores_and_index,
    per_item,
    student_scores_and_teacher_class,
)
from tea_med.engines.recalibration import BatchNormRecalibration, recalibrate_batchnorm
from tea_med.engines.resume import BestCheckpointState, RandomStates, ResumeCheckpoint, latest_checkpoint
from tea_med.engines.sampling import sample_eps, sample_targets
from tea_med.engines.steps import (
    PRECISIONS,
    VALIDATION_METRICS,
    TEATrainStep,
    TEAValidationStep,
    lower_is_better,
    metric_comparison,
)
from tea_med.engines.task import BN_MODES, TEATask
from tea_med.engines.teacher_masks import teacher_mask_datalist
from tea_med.engines.teacher_statistics import TEACHER_STATISTICS, TeacherTrainingStatistics
from tea_med.engines.validation import ValidateLastEpoch

__all__ = [
    "BN_MODES",
    "PRECISIONS",
    "TEACHER_STATISTICS",
    "VALIDATION_METRICS",
    "BatchNormRecalibration",
    "BestCheckpointState",
    "ItemAverage",
    "RandomStates",
    "ResumeCheckpoint",
    "TEATask",
    "TEATrainStep",
    "TEAValidationStep",
    "TeacherTrainingStatistics",
    "ValidateLastEpoch",
    "class_scores_and_index",
    "latest_checkpoint",
    "lower_is_better",
    "metric_comparison",
    "per_item",
    "recalibrate_batchnorm",
    "sample_eps",
    "sample_targets",
    "student_scores_and_teacher_class",
    "teacher_mask_datalist",
    "tune_cpu_allocator",
]
