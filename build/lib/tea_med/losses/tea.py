"""The TEA loss (paper Eqs. 1-2, docs/method.md, section 4) and its ablation variants (Eqs. C12-C13).

Per sample, for student heatmap ``S`` and teacher heatmap ``T``::

    d(S, T) = mean|S - T| / ( sqrt(mean|S|) * sqrt(mean|T|) + 1e-10 )

evaluated at ``M = 1 + floor(log2(min_side / 8))`` resolutions (level ``i``: average pooling
with kernel = stride = ``2**i``), averaged over levels and over the batch. 2-D and 3-D maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_TINY = 1e-30  # keeps sqrt's derivative finite for an all-zero heatmap; far below any real norm


def geometric_l1_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 1: L1 distance normalised by the geometric mean of the two L1 norms, per sample ``[B]``."""
    s, t = s.flatten(1), t.flatten(1)
    num = (s - t).abs().mean(1)
    den = torch.sqrt((s.abs().mean(1) * t.abs().mean(1)).clamp_min(_TINY)) + 1e-10
    return num / den


def individual_l1_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. C12: ``|| S/||S||_1 - T/||T||_1 ||_1`` per sample (zero for any positive rescaling)."""
    s, t = s.flatten(1), t.flatten(1)
    sn = s / s.abs().sum(1, keepdim=True).clamp_min(_TINY)
    tn = t / t.abs().sum(1, keepdim=True).clamp_min(_TINY)
    return (sn - tn).abs().sum(1)


def individual_l2_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. C13: ``|| S/||S||_2 - T/||T||_2 ||_2`` per sample."""
    s, t = s.flatten(1), t.flatten(1)
    sn = s / s.norm(dim=1, keepdim=True).clamp_min(_TINY)
    tn = t / t.norm(dim=1, keepdim=True).clamp_min(_TINY)
    return torch.sqrt(((sn - tn) ** 2).sum(1).clamp_min(_TINY))


def resolution_levels(spatial_shape: tuple[int, ...] | torch.Size, min_side: int = 8) -> int:
    """``M = 1 + floor(log2(min_side_of_map / min_side))``, at least 1 (224 -> 5 levels)."""
    side = min(spatial_shape)
    return 1 if side < 2 * min_side else 1 + math.floor(math.log2(side / min_side))


class HeatmapLoss(nn.Module):
    """A per-sample heatmap distance, optionally over several resolutions.

    Args:
        distance: ``(S, T) -> Tensor[B]``.
        multi_resolution: evaluate at every level down to ``min_side`` (Eq. 2) or only at full
            resolution.
        min_side: the smallest pooled side that still forms a level.
        detach_target: treat ``T`` as a constant (the frozen teacher). Turn off only for the
            warm-up co-training, where the TEA loss also trains the teacher.
    """

    def __init__(
        self,
        distance: Distance,
        *,
        multi_resolution: bool = True,
        min_side: int = 8,
        detach_target: bool = True,
    ) -> None:
        super().__init__()
        if min_side < 1:
            raise ValueError(f"min_side must be >= 1, got {min_side}")
        self.distance = distance
        self.multi_resolution = multi_resolution
        self.min_side = min_side
        self.detach_target = detach_target

    def levels(
        self, student: torch.Tensor, teacher: torch.Tensor, detach_target: bool | None = None
    ) -> torch.Tensor:
        """The distance per sample and level, ``[B, M]`` (level 0 = full resolution).

        ``detach_target`` overrides the instance's setting for this call.
        """
        if student.shape != teacher.shape:
            raise ValueError(
                f"student and teacher heatmaps must have the same shape, got {tuple(student.shape)} "
                f"and {tuple(teacher.shape)}"
            )
        if student.ndim not in (4, 5):
            raise ValueError(
                f"heatmaps must be [B, C, H, W] or [B, C, D, H, W], got shape {tuple(student.shape)}"
            )
        if self.detach_target if detach_target is None else detach_target:
            teacher = teacher.detach()
        pool = F.avg_pool2d if student.ndim == 4 else F.avg_pool3d
        n = resolution_levels(student.shape[2:], self.min_side) if self.multi_resolution else 1
        out = []
        s, t = student, teacher
        for i in range(n):
            if i:  # successive 2x pooling == pooling with kernel = stride = 2**i (same windows)
                s, t = pool(s, 2), pool(t, 2)
            out.append(self.distance(s, t))
        return torch.stack(out, dim=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.levels(student, teacher).mean()


class TEALoss(HeatmapLoss):
    """The TEA loss: geometric-mean-normalised L1, multi-resolution (paper Eq. 2).

    ``TEALoss(multi_resolution=False)`` is the single-resolution ablation (Eq. 1 alone).
    """

    def __init__(self, *, multi_resolution: bool = True, min_side: int = 8, detach_target: bool = True):
        super().__init__(
            geometric_l1_distance,
            multi_resolution=multi_resolution,
            min_side=min_side,
            detach_target=detach_target,
        )


class L1NormalizedLoss(HeatmapLoss):
    """Ablation (Eq. C12): L1 between individually L1-normalised heatmaps; single resolution."""

    def __init__(self, *, multi_resolution: bool = False, min_side: int = 8, detach_target: bool = True):
        super().__init__(
            individual_l1_distance,
            multi_resolution=multi_resolution,
            min_side=min_side,
            detach_target=detach_target,
        )


class L2NormalizedLoss(HeatmapLoss):
    """Ablation (Eq. C13): L2 between individually L2-normalised heatmaps; single resolution."""

    def __init__(self, *, multi_resolution: bool = False, min_side: int = 8, detach_target: bool = True):
        super().__init__(
            individual_l2_distance,
            multi_resolution=multi_resolution,
            min_side=min_side,
            detach_target=detach_target,
        )
