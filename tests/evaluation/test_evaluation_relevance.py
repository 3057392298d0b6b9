"""Share of positive relevance outside the lung mask: hand-computed cases, inputs and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tea_med.evaluation import background_relevance_share

MASK = np.array([[[1, 1], [0, 0]]], dtype=float)  # top row = lung


def test_hand_computed_share_and_negative_relevance_ignored() -> None:
    h = np.array([[[3.0, 1.0], [1.0, -5.0]]])  # positive: 4 inside, 1 outside; -5 ignored
    np.testing.assert_allclose(background_relevance_share(h, MASK), [1 / 5])


def test_channels_are_summed_before_the_positive_part() -> None:
    h = np.zeros((1, 3, 2, 2))
    h[0, 0, 1, 0], h[0, 1, 1, 0] = 2.0, -1.5  # background pixel: net +0.5 (not +2)
    h[0, 2, 0, 0] = 0.5  # lung pixel: +0.5
    np.testing.assert_allclose(background_relevance_share(h, MASK[:, None]), [0.5])


def test_batch_torch_and_layouts_agree() -> None:
    """Two images of 3 channels x 2 x 3 pixels, shares worked out by hand.

    Image 0: channel sum [[2, -1, 3], [1, 0, 4]], lung [[1, 0, 0], [1, 1, 0]]: positive 2+3+1+4 = 10,
    outside 3+4 = 7 -> 0.7 (clipping each channel first would give 8/13).
    Image 1: channel sum [[1, 1, 1], [1, -2, 0]], mask [[1, 1, 0.5], [0, 0, 0]] (0.5 is not above the
    threshold 0.5: background): positive 4, outside 1+1 = 2 -> 0.5.
    """
    h = np.array(
        [
            [[[2, 1, 3], [1, 2, 4]], [[0, -2, 0], [0, -2, 0]], [[0, 0, 0], [0, 0, 0]]],
            [[[1, 0, 1], [1, 0, 0]], [[0, 1, 0], [0, -3, 0]], [[0, 0, 0], [0, 1, 0]]],
        ],
        dtype=float,
    )
    m = np.array([[[[1, 0, 0], [1, 1, 0]]], [[[1, 1, 0.5], [0, 0, 0]]]], dtype=np.float32)
    want = [0.7, 0.5]
    share = background_relevance_share(h, m)
    np.testing.assert_allclose(share, want, rtol=1e-12)
    np.testing.assert_allclose(background_relevance_share(torch.from_numpy(h), torch.from_numpy(m)), want)
    np.testing.assert_allclose(background_relevance_share(h.sum(1), m[:, 0]), want)
    assert share.shape == (2,) and share.dtype == np.float64


def test_no_positive_relevance_is_nan_and_soft_masks_are_thresholded() -> None:
    h = np.stack([-np.ones((2, 2)), np.ones((2, 2))])
    m = np.stack([MASK[0], np.array([[0.9, 0.6], [0.4, 0.1]])])
    share = background_relevance_share(h, m)
    assert np.isnan(share[0]) and share[1] == pytest.approx(0.5)
    assert background_relevance_share(h[1:], m[1:], threshold=0.05)[0] == 0.0


@pytest.mark.parametrize(
    ("h", "m", "match"),
    [
        (
            np.zeros((2, 2)),
            MASK,
            r"heatmaps must have shape \[B, C, H, W\] or \[B, H, W\]; got shape \(2, 2\)",
        ),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 2)), r"lung_masks must have one channel"),
        (np.zeros((1, 2, 2)), np.zeros((2, 2)), r"lung_masks must have shape"),
        (np.zeros((1, 3, 4, 4)), MASK, r"heatmaps \(channels summed\) have shape \(1, 4, 4\) but lung_masks"),
        (np.full((1, 2, 2), np.nan), MASK, r"heatmaps hold NaN"),
    ],
)
def test_errors(h: np.ndarray, m: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        background_relevance_share(h, m)
