"""Grad-CAM (Selvaraju et al. 2017), differentiable, upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tea_med.explain.base import (
    Explainer,
    Explanation,
    Target,
    check_logits,
    plain_input,
    resolve_target,
    selected_logits,
)
from tea_med.explain.layers import ActivationCapture


def upsample_to(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Resize a ``[B, 1, *s]`` map to ``x``'s spatial size (bilinear / trilinear)."""
    mode = "bilinear" if x.ndim == 4 else "trilinear" if x.ndim == 5 else "linear"
    return F.interpolate(m, size=x.shape[2:], mode=mode, align_corners=False)


class GradCAM(Explainer):
    """``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``dQ/dA_k``.

    Args:
        layer: name of the module whose output ``A`` is used (``model.named_modules()``);
            default: the last convolutional block (last leaf module with a spatial output).

    The heatmap has one channel: ``[B, 1, *spatial]`` at the input's size.
    """

    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer

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
        with ActivationCapture(model, self.layer, x_in.ndim) as cap, torch.enable_grad():
            logits = check_logits(model(x_in), x_in.shape[0])
        a = cap.result()
        t = resolve_target(target, logits)
        (grad,) = torch.autograd.grad(selected_logits(logits, t), a, create_graph=create_graph)
        weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
        cam = upsample_to(torch.relu((weights * a).sum(1, keepdim=True)), x_in)
        if not create_graph:
            cam, logits = cam.detach(), logits.detach()
        return Explanation(heatmap=cam, logits=logits, target=t)

    def __repr__(self) -> str:
        return f"GradCAM(layer={self.layer!r})"
