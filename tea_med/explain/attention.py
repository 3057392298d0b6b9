"""Activation-based spatial attention (Zagoruyko & Komodakis 2017, "attention transfer")."""

from __future__ import annotations

import torch
from torch import nn

from tea_med.explain.base import Explainer, Explanation, Target, check_logits, plain_input, resolve_target
from tea_med.explain.gradcam import upsample_to
from tea_med.explain.layers import ActivationCapture


class SpatialAttention(Explainer):
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
        self.layer = layer
        self.p = p

    def explain(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: Target,
        *,
        eps: float | torch.Tensor | None = None,
        create_graph: bool = False,
    ) -> Explanation:
        x_in = plain_input(x)
        with ActivationCapture(model, self.layer, x_in.ndim) as cap, torch.set_grad_enabled(create_graph):
            logits = check_logits(model(x_in), x_in.shape[0])
            a = cap.result()
            q = a.abs().pow(self.p).sum(1, keepdim=True)
            norm = q.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (q.ndim - 1)))
            heat = upsample_to(q / norm, x_in)
        t = resolve_target(target, logits)
        if not create_graph:
            heat, logits = heat.detach(), logits.detach()
        return Explanation(heatmap=heat, logits=logits, target=t)

    def __repr__(self) -> str:
        return f"SpatialAttention(layer={self.layer!r}, p={self.p})"
