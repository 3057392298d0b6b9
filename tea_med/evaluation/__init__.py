"""Evaluation: metrics, bias gaps, background relevance and figures."""

from tea_med.evaluation.figures import heatmap_grid

__all__ = ["heatmap_grid"]
