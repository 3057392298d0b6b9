"""Inference next to PACS: inputs, output writers (no training code imported here)."""

from tea_med.deploy.inputs import IMAGE_SUFFIXES, inference_datalist
from tea_med.deploy.overlays import HeatmapOverlayWriter
from tea_med.deploy.writers import LungMaskWriter, PredictionWriter

__all__ = [
    "IMAGE_SUFFIXES",
    "HeatmapOverlayWriter",
    "LungMaskWriter",
    "PredictionWriter",
    "inference_datalist",
]
