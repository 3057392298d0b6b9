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

#: the student bundle's ``explainer`` setting -> the explainer TEA trains with (the paper's
#: Table 5 ablation names)
TEA_EXPLAINERS: dict[str, str] = {
    "lrp": "lrp_epsilon",
    "gradient_x_input": "gradient_x_input",
    "input_gradient": "input_gradient",
    "gradcam": "gradcam",
    "attention": "spatial_attention",
}


def make_explainer(name: str) -> Explainer:
    """The explainer TEA uses for ``explainer: name`` (one of :data:`TEA_EXPLAINERS`)."""
    if name not in TEA_EXPLAINERS:
        raise ValueError(f"explainer must be one of {', '.join(TEA_EXPLAINERS)}, got {name!r}")
    return EXPLAINERS[TEA_EXPLAINERS[name]]()


__all__ = [
    "EXPLAINERS",
    "TEA_EXPLAINERS",
    "Explainer",
    "Explanation",
    "ForwardGuard",
    "GradCAM",
    "GradientXInput",
    "InputGradient",
    "LRPEpsilon",
    "LRPUnsupportedError",
    "SpatialAttention",
    "make_explainer",
]
