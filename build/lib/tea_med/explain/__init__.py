"""Differentiable explainers with one call signature.

``explainer(model, x, target, *, eps=None, create_graph=False) -> Tensor[B, C, *spatial]``
(Grad-CAM and spatial attention return one channel). ``explainer.explain(...)`` also returns
the logits and explained classes of the same forward pass.
"""

from tea_med.explain.attention import SpatialAttention
from tea_med.explain.base import Explainer, Explanation, LRPUnsupportedError
from tea_med.explain.gradcam import GradCAM
from tea_med.explain.gradient import GradientXInput, InputGradient
from tea_med.explain.guard import ForwardGuard
from tea_med.explain.lrp import LRPEpsilon

EXPLAINERS: dict[str, type[Explainer]] = {
    "lrp_epsilon": LRPEpsilon,
    "gradient_x_input": GradientXInput,
    "input_gradient": InputGradient,
    "gradcam": GradCAM,
    "spatial_attention": SpatialAttention,
}

__all__ = [
    "EXPLAINERS",
    "Explainer",
    "Explanation",
    "ForwardGuard",
    "GradCAM",
    "GradientXInput",
    "InputGradient",
    "LRPEpsilon",
    "LRPUnsupportedError",
    "SpatialAttention",
]
