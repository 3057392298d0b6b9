"""Every model on the three test splits: balanced accuracy with its interval per split."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from tea_med.data.phantom_files import write_phantoms
from tea_med.data.phantoms import CLASSES
from tea_med.evaluation.report import evaluate_on_bias_splits


class _AlwaysFirstClass(nn.Module):
    """A ReLU network whose logits favour class 0 whatever the image (LRP-explainable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_a_constant_classifier_scores_one_over_k_on_every_split_with_an_interval(tmp_path: Path) -> None:
    written = write_phantoms(tmp_path, n=6, size=32, formats=("png",), grid=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one predicted class: undefined precisions, by design
        evaluation = evaluate_on_bias_splits(
            {"first": _AlwaysFirstClass().eval()},
            written["datalist_png"],
            size=32,
            class_names=CLASSES,
            eps=0.01,
        )
    row = evaluation.rows()["first"]
    for split in ("test_biased", "test_unbiased", "test_deceiving"):
        assert row[f"acc_{split}"] == pytest.approx(1 / 3)  # recall 1, 0, 0 over three classes
        low, high = row[f"acc_{split}_low"], row[f"acc_{split}_high"]
        assert 0.0 <= low < high <= 1.0
        assert evaluation.accuracy["first"][split].estimate == pytest.approx(1 / 3)
    assert row["gap"] == pytest.approx(0.0)
