"""Heatmap evidence: how much of a classifier's positive relevance lies outside the lungs.

docs/method.md, section 8: a classifier that learned a hospital shortcut puts LRP relevance on the background
(text, markers, borders); one that did not keeps it inside the lung mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["background_relevance_share"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def background_relevance_share(heatmaps: Any, lung_masks: Any, *, threshold: float = 0.5) -> np.ndarray:
    """Per image, the share of positive relevance outside the lung mask, in [0, 1].

    Args:
        heatmaps: relevance ``[B, C, H, W]`` or ``[B, H, W]`` (numpy or torch). Channels are summed
            first (relevance is additive over input channels), then only the positive part counts:
            ``R⁺ = max(Σ_c R_c, 0)`` (evidence *for* the explained class).
        lung_masks: ``[B, 1, H, W]`` or ``[B, H, W]``; a pixel is lung where ``mask > threshold``
            (binary masks and probability maps alike).
        threshold: lung/background cut on the mask values.

    Returns:
        ``[B]`` float64: ``Σ R⁺·(1 - lung) / Σ R⁺``. An image with no positive relevance at all
        (0/0) gets NaN; aggregate with :func:`numpy.nanmean`.
    """
    h = _to_numpy(heatmaps)
    m = _to_numpy(lung_masks)
    if h.ndim == 4:
        h = h.sum(1)
    elif h.ndim != 3:
        raise ValueError(f"heatmaps must have shape [B, C, H, W] or [B, H, W]; got shape {h.shape}")
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise ValueError(f"lung_masks must have one channel ([B, 1, H, W]); got shape {m.shape}")
        m = m[:, 0]
    elif m.ndim != 3:
        raise ValueError(f"lung_masks must have shape [B, 1, H, W] or [B, H, W]; got shape {m.shape}")
    if h.shape != m.shape:
        raise ValueError(
            f"heatmaps (channels summed) have shape {h.shape} but lung_masks {m.shape}; batch and "
            "spatial sizes must match"
        )
    if not np.isfinite(h).all():
        raise ValueError("heatmaps hold NaN or infinite values")
    pos = np.clip(h, 0.0, None)
    background = m <= threshold
    total = pos.sum((1, 2))
    outside = (pos * background).sum((1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, outside / np.where(total > 0, total, 1.0), np.nan)
