"""Grad-CAM (Selvaraju et al. 2017), differentiable, upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tea_med.explain.base import selected_logits
from tea_med.explain.layers import LayerMapExplainer


def upsample_to(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Resize a ``[B, 1, *s]`` map to ``x``'s spatial size (bilinear / trilinear)."""
    mode = "bilinear" if x.ndim == 4 else "trilinear" if x.ndim == 5 else "linear"
    return F.interpolate(m, size=x.shape[2:], mode=mode, align_corners=False)


class GradCAM(LayerMapExplainer):
    """``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``dQ/dA_k``.

    Args:
        layer: name of the module whose output ``A`` is used (``model.named_modules()``);
            default: the last convolutional block (last leaf module with a spatial output).

    The heatmap has one channel: ``[B, 1, *spatial]`` at the input's size.
    """

    def layer_map(
        self, a: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor, create_graph: bool
    ) -> torch.Tensor:
        (grad,) = torch.autograd.grad(selected_logits(logits, target), a, create_graph=create_graph)
        weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
        return upsample_to(torch.relu((weights * a).sum(1, keepdim=True)), x)

    def __repr__(self) -> str:
        return f"GradCAM(layer={self.layer!r})"
