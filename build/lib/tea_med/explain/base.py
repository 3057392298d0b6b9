"""What every tea_med explainer shares: the call signature, argument checks, the result type.

All explainers are called as::

    heatmap = explainer(model, x, target, *, eps=None, create_graph=False)

``x`` is ``[B, C, *spatial]``; ``target`` is a ``LongTensor[B]`` of class indices (or a
callable that maps the model's logits ``[B, K]`` to one, so a class can be chosen from the
same forward pass that is explained); ``eps`` is only used by ``LRPEpsilon``.  With
``create_graph=True`` the heatmap is differentiable with respect to the model's parameters,
so a loss on it can train the model.  With ``create_graph=False`` it is detached.

``explainer.explain(...)`` takes the same arguments and also returns the logits and the
targets that were explained (one forward pass serves both).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Target = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


class LRPUnsupportedError(ValueError):
    """The model cannot be explained faithfully (reused ReLU, in-place op, functional ReLU, ...)."""


@dataclass(frozen=True)
class Explanation:
    """One explainer call: the heatmap, the logits of the same forward pass, the explained classes."""

    heatmap: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor


def plain_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain tensor (MONAI's MetaTensor adds per-op overhead) that requires grad."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor [B, C, *spatial], got {type(x).__name__}")
    if x.ndim < 3:
        raise ValueError(f"x must have shape [B, C, *spatial] (3 to 5 dims), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if type(x) is not torch.Tensor:
        x = x.as_subclass(torch.Tensor)
    return x if x.requires_grad else x.detach().requires_grad_(True)


def check_logits(logits: torch.Tensor, batch: int) -> torch.Tensor:
    """Refuse outputs that are not ``[B, K]`` logits with ``K >= 2``."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise LRPUnsupportedError(f"the model must return logits of shape [B, K] with B={batch}, got {shape}")
    if logits.shape[1] < 2:
        raise LRPUnsupportedError(
            f"the model has a single-logit head (output shape {tuple(logits.shape)}); TEA explains one "
            "class per image and needs one logit per class (K >= 2). Replace a sigmoid head with a "
            "2-logit softmax head."
        )
    return logits


def resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """The ``LongTensor[B]`` of classes to explain, validated against the logits."""
    batch, n_classes = logits.shape
    t = target(logits.detach()) if callable(target) else target
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target must be an integer tensor of shape [{batch}], got {t!r}")
    t = t.to(device=logits.device, dtype=torch.long).reshape(-1)
    if t.numel() != batch:
        raise ValueError(f"target must hold one class per sample ({batch}), got {t.numel()} values")
    if batch and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"target classes must lie in [0, {n_classes - 1}], got {t.tolist()}")
    return t


def selected_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of ``logits[b, target[b]]``: one backward explains every sample."""
    return logits.gather(1, target[:, None]).sum()


class Explainer(ABC):
    """Base class: subclasses implement :meth:`explain`."""

    @abstractmethod
    def explain(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: Target,
        *,
        eps: float | torch.Tensor | None = None,
        create_graph: bool = False,
    ) -> Explanation:
        """Explain ``target`` for each sample of ``x``; see the module docstring."""

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: Target,
        *,
        eps: float | torch.Tensor | None = None,
        create_graph: bool = False,
    ) -> torch.Tensor:
        return self.explain(model, x, target, eps=eps, create_graph=create_graph).heatmap

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
