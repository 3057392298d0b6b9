"""Each probe on hand-built models whose answer is known: one reads a corner of the background,
one reads only pixels inside every lung, one cannot be explained by LRP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tea_med.audit.run import AuditData, AuditSettings, audit_model, gate_value
from tea_med.data.phantom_files import write_phantoms
from tea_med.data.phantoms import CLASSES

SIZE = 32


class _RegionReader(nn.Module):
    """Logits ``(k (r - t), 0, -k (r - t))`` of ``r``, the mean of the input over a fixed region."""

    def __init__(self, region: torch.Tensor, threshold: float, act: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("region", region / region.sum())
        self.fc = nn.Linear(1, 3)
        self.act = act if act is not None else nn.ReLU()
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[50.0], [0.0], [-50.0]]))
            self.fc.bias.copy_(torch.tensor([-50.0 * threshold, 0.0, 50.0 * threshold]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = (x[:, :1] * self.region).sum(dim=(1, 2, 3)).unsqueeze(1)
        return self.fc(self.act(r))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> AuditData:
    out = tmp_path_factory.mktemp("audit")
    written = write_phantoms(out, n=12, size=SIZE, formats=("png",), grid=False, progress=False)
    return AuditData(written["datalist_png"], "test_unbiased", SIZE, list(CLASSES), batch=12)


def _split(data: AuditData) -> tuple[torch.Tensor, torch.Tensor]:
    (chunk,) = list(data.chunks())
    return chunk["image"], chunk["mask"]


def _corner_reader(data: AuditData, act: nn.Module | None = None) -> _RegionReader:
    x, _ = _split(data)
    region = torch.zeros(1, 1, SIZE, SIZE)
    region[..., :4, :4] = 1.0
    values = (x[:, :1, :4, :4]).mean(dim=(1, 2, 3))
    return _RegionReader(region, float(values.median()), act).eval()


def _lung_reader(data: AuditData) -> _RegionReader:
    x, mask = _split(data)
    inside_all = mask.amin(0, keepdim=True)  # pixels that are lung in every image
    assert inside_all.sum() > 10
    values = (x[:, :1] * inside_all).sum(dim=(1, 2, 3)) / inside_all.sum()
    return _RegionReader(inside_all, float(values.median())).eval()


def test_a_model_reading_a_background_corner_is_flagged_by_every_probe(data: AuditData) -> None:
    corner, lungs = audit_model(_corner_reader(data), data), audit_model(_lung_reader(data), data)
    assert gate_value(corner, "background_share") == pytest.approx(1.0)  # all relevance in the corner
    assert gate_value(lungs, "background_share") == pytest.approx(0.0, abs=1e-9)
    assert gate_value(corner, "swap_flip_rate") > 0.2
    assert gate_value(lungs, "swap_flip_rate") == 0.0  # its pixels are A's in every swap
    assert gate_value(lungs, "swap_following_rate") == 0.0
    assert 0.0 < gate_value(corner, "swap_following_rate") <= gate_value(corner, "swap_flip_rate")
    assert lungs["swap"]["mean_abs_delta"]["overall"]["estimate"] == 0.0
    assert gate_value(corner, "marker_flip_rate") > 0.0 and gate_value(lungs, "marker_flip_rate") == 0.0
    # lungs removed: the corner reader does not notice, the lung reader does
    assert corner["lungs_removed"]["kept_rate"]["overall"]["estimate"] == 1.0
    assert lungs["lungs_removed"]["kept_rate"]["overall"]["estimate"] < 1.0
    for summary in (corner, lungs):
        flip = summary["swap"]["flip_rate"]
        assert set(flip["by_source"]) == {"H4", "H5", "H6"} and set(flip["by_class"]) == set(CLASSES)
        assert flip["overall"]["low"] <= flip["overall"]["estimate"] <= flip["overall"]["high"]
        assert sum(map(sum, summary["swap"]["matrix"]["n"])) == 12
        assert np.all(np.diag(np.array(summary["swap"]["matrix"]["n"])) == 0)  # partners: other sources


def test_a_model_lrp_cannot_explain_is_reported_and_still_probed(data: AuditData) -> None:
    summary = audit_model(_corner_reader(data, act=nn.GELU()), data)
    assert "GELU" in summary["background_share"]["refused"]
    assert gate_value(summary, "background_share") is None
    assert gate_value(summary, "swap_flip_rate") is not None and summary["markers"]["by_marker"]


def test_an_unknown_gate_metric_is_named(data: AuditData) -> None:
    with pytest.raises(
        ValueError, match=r"unknown metric 'flips'; choose from background_share, swap_flip_rate"
    ):
        gate_value({}, "flips")


def test_masks_can_come_from_a_segmenter_instead_of_the_manifest(data: AuditData, tmp_path: Path) -> None:
    calls: list[int] = []

    def left_half(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        m = torch.zeros(x.shape[0], 1, *x.shape[2:])
        m[..., : x.shape[-1] // 2] = 1.0
        return m

    segmented = AuditData(data.manifest, data.split, SIZE, data.class_names, masks=left_half, batch=12)
    summary = audit_model(_corner_reader(data), segmented, AuditSettings(marker_texts=("L",)))
    assert calls == [12] and summary["n_images"] == 12
