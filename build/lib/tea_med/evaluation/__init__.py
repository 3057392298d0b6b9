"""Evaluation: metrics, bias gaps, background relevance and figures.

- :mod:`.bias`: balanced accuracy on biased / unbiased / deceiving test sets and the gap.
- :mod:`.intervals`: per-class Se/Sp/precision/F1 (posterior of the confusion matrix) and
  one-vs-rest AUC (DeLong) with 95% intervals and macro averages; :func:`classification_report`.
- :mod:`.relevance`: share of positive LRP relevance outside the lung mask.
- :mod:`.plots` / :mod:`.figures`: ROC curves, confusion matrices, heatmap grids (PNG).
"""

from tea_med.evaluation.bias import SPLITS, BiasReport, balanced_accuracy, bias_gaps, bias_report, bias_table
from tea_med.evaluation.figures import heatmap_grid
from tea_med.evaluation.intervals import (
    ClassificationReport,
    DeLongResult,
    Interval,
    MetricRow,
    UndefinedMetricWarning,
    classification_report,
    confusion_matrix,
    confusion_posterior,
    confusion_posterior_intervals,
    delong_ovr,
    rates_from_confusion,
)
from tea_med.evaluation.plots import confusion_matrix_plot, roc_curves
from tea_med.evaluation.relevance import background_relevance_share

__all__ = [
    "SPLITS",
    "BiasReport",
    "ClassificationReport",
    "DeLongResult",
    "Interval",
    "MetricRow",
    "UndefinedMetricWarning",
    "background_relevance_share",
    "balanced_accuracy",
    "bias_gaps",
    "bias_report",
    "bias_table",
    "classification_report",
    "confusion_matrix",
    "confusion_matrix_plot",
    "confusion_posterior",
    "confusion_posterior_intervals",
    "delong_ovr",
    "heatmap_grid",
    "rates_from_confusion",
    "roc_curves",
]
