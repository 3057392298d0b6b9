"""Activation-based spatial attention (Zagoruyko & Komodakis 2017, "attention transfer")."""

from __future__ import annotations

import torch

from tea_med.explain.gradcam import upsample_to
from tea_med.explain.layers import LayerMapExplainer


class SpatialAttention(LayerMapExplainer):
    """``Q = sum_c |A_c|^p``, L2-normalised per sample, upsampled to the input size.

    Class-agnostic: ``target`` is validated and returned but does not change the map. The
    heatmap has one channel, ``[B, 1, *spatial]``. Differentiable through ``A``.

    Args:
        layer: module whose output ``A`` is used; default the last convolutional block.
        p: exponent (the paper's default 2).
    """

    def __init__(self, layer: str | None = None, p: float = 2.0) -> None:
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p!r}")
        super().__init__(layer)
        self.p = p

    def layer_map(
        self, a: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor, create_graph: bool
    ) -> torch.Tensor:
        q = a.abs().pow(self.p).sum(1, keepdim=True)
        norm = q.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (q.ndim - 1)))
        return upsample_to(q / norm, x)

    def __repr__(self) -> str:
        return f"SpatialAttention(layer={self.layer!r}, p={self.p})"
