"""heatmap_grid writes a real PNG of the expected size and refuses mismatched inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tea_med.evaluation import heatmap_grid


def test_heatmap_grid_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 16, 16))
    path = heatmap_grid(
        images,
        {"a": rng.normal(size=(3, 3, 16, 16)), "b": np.zeros((3, 16, 16))},
        tmp_path / "sub" / "grid.png",
        row_titles=["x", "y", "z"],
        title="t",
    )
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert w > h / 3 * 2  # three columns for three rows
    assert len(set(np.asarray(Image.open(path).convert("L")).flatten())) > 10  # not blank


def test_heatmap_grid_refuses_mismatched_counts(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"heatmaps\['a'\] has 2 maps for 3 images"):
        heatmap_grid(np.zeros((3, 8, 8)), {"a": np.zeros((2, 8, 8))}, tmp_path / "g.png")
    with pytest.raises(ValueError, match="at least one image"):
        heatmap_grid(np.zeros((0, 8, 8)), {}, tmp_path / "g.png")
