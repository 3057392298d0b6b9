"""The audit's image edits: what a classifier that reads the lungs must not notice.

All work on preprocessed batches ``[B, C, H, W]`` in ``[0, 1]`` with lung masks ``[B, 1, H, W]``
(1 = lung) and leave their inputs untouched.

- :func:`swap_background`: the lungs of image A on the background of image B. Inside A's lung
  mask the result is A pixel for pixel; where neither image has lungs it is B (its borders,
  burned-in text, noise); where only B has lungs it is A (B's lungs never show); a ring of
  ``blend`` pixels outside the lungs of either image fades from A to B, so no hard seam marks the
  edit.
- :func:`remove_lungs`: the background kept, the lungs replaced by uniform noise (the teacher's
  background noise, section 5 of docs/method.md): a model that still predicts confidently reads
  the background.
- :func:`stamp_markers`: a burned-in text marker stamped outside the lungs at a given corner and
  size, as scanners and technologists do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

#: where :func:`stamp_markers` may put a marker
CORNERS = ("tl", "tr", "bl", "br")


def _check_pair(images: torch.Tensor, masks: torch.Tensor, what: str) -> None:
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(
            f"{what}: images must be [B, C, H, W] and masks [B, 1, H, W], got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}"
        )
    if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
        raise ValueError(
            f"{what}: images {tuple(images.shape)} and masks {tuple(masks.shape)} differ in batch or size"
        )


def blend_ring(mask: torch.Tensor, width: int) -> torch.Tensor:
    """``1`` inside ``mask``, falling linearly to ``0`` over ``width`` pixels outside it (chessboard
    distance), ``0`` beyond: a soft edge that never eats into the mask."""
    inside = (mask > 0.5).to(torch.float32)
    if width <= 0:
        return inside
    alpha, grown = inside.clone(), inside
    for step in range(1, width + 1):
        grown = F.max_pool2d(grown, kernel_size=3, stride=1, padding=1)
        ring = (grown > 0) & (alpha == 0)
        alpha[ring] = 1.0 - step / (width + 1)
    return alpha


def swap_background(
    lungs_from: torch.Tensor,
    lung_masks: torch.Tensor,
    background_from: torch.Tensor,
    background_masks: torch.Tensor,
    blend: int = 2,
) -> torch.Tensor:
    """Image ``b`` of the result: the lungs (and the body where ``background_from[b]`` has lungs)
    of ``lungs_from[b]`` on the background of ``background_from[b]`` (see the module docs)."""
    _check_pair(lungs_from, lung_masks, "swap_background")
    _check_pair(background_from, background_masks, "swap_background")
    if lungs_from.shape != background_from.shape:
        raise ValueError(
            f"swap_background: both batches must have one shape, got {tuple(lungs_from.shape)} and "
            f"{tuple(background_from.shape)}"
        )
    union = torch.maximum(lung_masks, background_masks)
    alpha = blend_ring(union, blend).to(lungs_from.dtype)
    return alpha * lungs_from + (1.0 - alpha) * background_from


def remove_lungs(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """The lungs replaced by uniform noise in ``[low, high]`` drawn from ``generator``."""
    _check_pair(images, masks, "remove_lungs")
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype) * (high - low) + low
    inside = (masks > 0.5).to(images.dtype)
    return images * (1.0 - inside) + noise.to(images.device) * inside


def text_glyph(text: str, height: int) -> np.ndarray:
    """``text`` rendered white on black, ``height`` pixels tall (PIL's default font), in ``[0, 1]``."""
    font = ImageFont.load_default(size=max(int(height), 6))
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (max(int(right - left), 1), max(int(bottom - top), 1)))
    ImageDraw.Draw(canvas).text((-left, -top), text, fill=255, font=font)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def stamp_markers(
    images: torch.Tensor,
    masks: torch.Tensor,
    text: str,
    corner: str,
    height: int,
    value: float = 1.0,
    margin: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``text`` stamped at ``corner`` (one of :data:`CORNERS`), ``height`` pixels tall, blended
    towards ``value``; returns ``(stamped, placed)`` where ``placed[b]`` says whether image ``b``
    got the marker: an image whose lungs reach the marker's box is left as it is."""
    _check_pair(images, masks, "stamp_markers")
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    size_h, size_w = images.shape[2:]
    glyph = text_glyph(text, height)
    if glyph.shape[0] > size_h // 2 or glyph.shape[1] > size_w - 2:
        raise ValueError(f"a {height}-px marker {text!r} does not fit a {size_h}x{size_w} image")
    margin = max(1, round(0.03 * min(size_h, size_w))) if margin is None else margin
    row = margin if corner[0] == "t" else size_h - margin - glyph.shape[0]
    col = margin if corner[1] == "l" else size_w - margin - glyph.shape[1]
    g = torch.zeros((1, 1, size_h, size_w), dtype=images.dtype)
    g[0, 0, row : row + glyph.shape[0], col : col + glyph.shape[1]] = torch.from_numpy(glyph)
    g = g.to(images.device)
    touched = g > 0
    placed = ~((masks > 0.5) & touched).flatten(1).any(1)
    weight = g * placed.reshape(-1, 1, 1, 1).to(images.dtype)
    return images * (1.0 - weight) + value * weight, placed


def shuffled_partners(sources: Sequence[str], generator: np.random.Generator) -> np.ndarray:
    """For each image, the index of a partner from another source (uniformly among them), or of
    another image when every image shares one source."""
    src = np.asarray([str(s) for s in sources])
    n = len(src)
    if n < 2:
        raise ValueError(f"a background swap needs at least two images, got {n}")
    partners = np.empty(n, dtype=np.int64)
    for i in range(n):
        others = np.flatnonzero(src != src[i])
        if others.size == 0:
            others = np.delete(np.arange(n), i)
        partners[i] = int(generator.choice(others))
    return partners


__all__ = [
    "CORNERS",
    "blend_ring",
    "remove_lungs",
    "shuffled_partners",
    "stamp_markers",
    "swap_background",
    "text_glyph",
]
