"""The audit's image edits, checked pixel by pixel on hand-made images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tea_med.audit.probes import blend_ring, remove_lungs, shuffled_partners, stamp_markers, swap_background


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros(1, 1, 12, 12)
    a[..., 3:7, 2:6] = 1.0  # A's lungs
    b = torch.zeros(1, 1, 12, 12)
    b[..., 4:9, 5:9] = 1.0  # B's lungs: overlap A's in rows 4-6, columns 5
    return a, b


def test_the_blend_ring_falls_linearly_outside_the_mask_and_never_inside() -> None:
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 4, 4] = 1.0
    alpha = blend_ring(mask, 2)[0, 0]
    assert alpha[4, 4] == 1.0
    assert alpha[3, 3] == pytest.approx(2 / 3) and alpha[4, 6] == pytest.approx(1 / 3)
    assert alpha[1, 4] == 0.0 and alpha[0, 0] == 0.0
    assert torch.equal(blend_ring(mask, 0), mask)


def test_a_swap_keeps_the_lungs_of_a_pixel_for_pixel_and_the_background_of_b() -> None:
    a_mask, b_mask = _masks()
    a = torch.full((1, 3, 12, 12), 0.2)
    a[..., 3:7, 2:6] = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    b = torch.full((1, 3, 12, 12), 0.9)
    out = swap_background(a, a_mask, b, b_mask, blend=1)
    inside_a = a_mask.expand_as(a) > 0
    assert torch.equal(out[inside_a], a[inside_a])  # A's lungs, exactly
    inside_b_only = ((b_mask > 0) & (a_mask == 0)).expand_as(a)
    assert torch.equal(out[inside_b_only], a[inside_b_only])  # B's lungs never show: A there
    assert torch.equal(out[..., 0, :], b[..., 0, :]) and torch.equal(out[..., :, 11], b[..., :, 11])
    # one pixel outside either mask: half A, half B
    assert out[0, 0, 2, 3].item() == pytest.approx(0.5 * 0.2 + 0.5 * 0.9)
    assert torch.equal(a[..., 0, 0], torch.full((1, 3), 0.2))  # inputs untouched


def test_removing_the_lungs_keeps_the_background_and_puts_noise_inside() -> None:
    a_mask, _ = _masks()
    img = torch.full((1, 3, 12, 12), 0.3)
    out = remove_lungs(img, a_mask, torch.Generator().manual_seed(1))
    outside = a_mask.expand_as(img) == 0
    assert torch.equal(out[outside], img[outside])
    inside = out[~outside]
    assert inside.min() >= 0.0 and inside.max() <= 1.0 and inside.std() > 0.1


def test_markers_land_outside_the_lungs_or_not_at_all() -> None:
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 20:44, 12:52] = 1.0  # central lungs: every corner is free
    masks[1, :, 0:30, 0:12] = 1.0  # lungs reaching the top-left corner
    img = torch.zeros(2, 3, 64, 64)
    for corner in ("tl", "tr", "bl", "br"):
        out, placed = stamp_markers(img, masks, "PORTABLE", corner, 9)
        changed = (out != img).any(1, keepdim=True)
        assert bool(placed[0]) and changed[0].any()
        assert not (changed & (masks > 0)).any()  # no stamped pixel inside a lung
        assert bool(placed[1]) == (corner != "tl")
        assert changed[1].any() == bool(placed[1])
    rows = (stamp_markers(img, masks, "R", "br", 9)[0][0, 0] > 0).nonzero()[:, 0]
    assert rows.min() >= 32  # a bottom corner is in the bottom half
    with pytest.raises(ValueError, match="corner must be one of tl, tr, bl, br, got 'middle'"):
        stamp_markers(img, masks, "R", "middle", 9)


def test_swap_partners_come_from_another_source() -> None:
    sources = ["H1", "H1", "H2", "H3", "H2"]
    partners = shuffled_partners(sources, np.random.default_rng(0))
    assert all(sources[p] != s for p, s in zip(partners, sources, strict=True))
    same = shuffled_partners(["H1"] * 3, np.random.default_rng(0))
    assert all(p != i for i, p in enumerate(same))
    with pytest.raises(ValueError, match="at least two images"):
        shuffled_partners(["H1"], np.random.default_rng(0))
