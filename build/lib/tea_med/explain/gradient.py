"""Gradient-based explainers: the input gradient, gradient x input, and their shared machinery.

One forward pass, then ``torch.autograd.grad`` of the explained logits with respect to the
input only (never the weights, which is what makes the teacher's heatmap cheap); with
``create_graph=True`` that backward is recorded so a loss on the heatmap can train the model.
"""

from __future__ import annotations

import contextlib

import torch
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


class GradientExplainer(Explainer):
    """Template: forward under :meth:`rules`, backward to the input, heatmap from the gradient."""

    def rules(
        self, model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor | None, create_graph: bool
    ) -> contextlib.AbstractContextManager[object]:
        """Context active during the forward pass *and* the backward that builds the heatmap."""
        return contextlib.nullcontext()

    def heatmap(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x * grad

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
        with self.rules(model, x_in, eps, create_graph) as ctx, torch.enable_grad():
            logits = check_logits(model(x_in), x_in.shape[0])
            after_forward = getattr(ctx, "after_forward", None)
            if after_forward is not None:
                after_forward()
            t = resolve_target(target, logits)
            (grad,) = torch.autograd.grad(selected_logits(logits, t), x_in, create_graph=create_graph)
        h = self.heatmap(x_in, grad)
        if not create_graph:
            h, logits = h.detach(), logits.detach()
        return Explanation(heatmap=h, logits=logits, target=t)


class InputGradient(GradientExplainer):
    """``dQ/dx``: the plain input gradient of the explained logit (Simonyan et al. 2014)."""

    def heatmap(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad


class GradientXInput(GradientExplainer):
    """``x * dQ/dx`` (Shrikumar et al. 2016); equals LRP-0 on ReLU networks."""
