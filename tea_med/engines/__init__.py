"""Training and inference steps plugged into MONAI engines, and their output adapters."""

from tea_med.engines.outputs import class_scores_and_index

__all__ = ["class_scores_and_index"]
