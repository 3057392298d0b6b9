"""Figures a person would rather look at than read (matplotlib without pyplot: no display or global state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _to_2d(a: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` or ``[H, W]`` -> ``[H, W]`` (channels summed: relevance is additive)."""
    a = np.asarray(a, dtype=np.float64)
    return a.sum(0) if a.ndim == 3 else a


def heatmap_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    heatmaps: Mapping[str, Sequence[np.ndarray] | np.ndarray],
    path: str | Path,
    *,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """One row per image: the image, then each named heatmap (red = positive relevance, blue =
    negative; symmetric colour scale per panel, channels summed). Writes a PNG and returns its path.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    n = len(images)
    if n == 0:
        raise ValueError("heatmap_grid needs at least one image")
    for name, maps in heatmaps.items():
        if len(maps) != n:
            raise ValueError(f"heatmaps[{name!r}] has {len(maps)} maps for {n} images")
    cols = 1 + len(heatmaps)
    fig = Figure(figsize=(2.2 * cols, 2.2 * n + (0.4 if title else 0)))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        img = _to_2d(images[i])
        axes[i, 0].imshow(img, cmap="gray")
        axes[i, 0].set_title(row_titles[i] if row_titles else "image", fontsize=8)
        for j, (name, maps) in enumerate(heatmaps.items(), start=1):
            h = _to_2d(maps[i])
            lim = float(np.abs(h).max()) or 1.0
            axes[i, j].imshow(img, cmap="gray", alpha=0.35)
            axes[i, j].imshow(h, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.8)
            axes[i, j].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
