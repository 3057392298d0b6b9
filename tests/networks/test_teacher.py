"""TeacherPipeline, the lung segmenter, the registry and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tea_med.networks import (
    NETWORKS,
    TeacherPipeline,
    build_network,
    densenet121,
    load_weights,
    lung_segmenter,
)


class AtlasSegmenter(nn.Module):
    """A segmenter whose lung logits are a learned map that does not depend on the pixels."""

    def __init__(self, side: int) -> None:
        super().__init__()
        logits = torch.full((1, 1, side, side), -4.0)
        logits[..., side // 4 : 3 * side // 4, side // 8 : 7 * side // 8] = 4.0
        self.logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1)


def teacher(side: int = 32, **kwargs: object) -> TeacherPipeline:
    return TeacherPipeline(AtlasSegmenter(side), densenet121(num_classes=3), **kwargs).eval()


def test_logits_ignore_background_pixels_and_depend_on_lung_pixels() -> None:
    t = teacher()
    x = torch.rand(2, 3, 32, 32)
    _, mask = t.masked_input(x)
    background = mask.expand_as(x) == 0
    x_bg = torch.where(background, torch.rand_like(x), x)  # only background pixels change
    x_lung = torch.where(background, x, torch.rand_like(x))  # only lung pixels change
    outs = {}
    for name, inp in {"x": x, "bg": x_bg, "lung": x_lung}.items():
        torch.manual_seed(11)  # the same background noise for every call
        outs[name] = t(inp)
    torch.testing.assert_close(outs["bg"], outs["x"], rtol=0, atol=0)
    assert (outs["lung"] - outs["x"]).abs().max() > 1e-4
    torch.manual_seed(12)  # the noise itself does move the logits a little
    assert (t(x) - outs["x"]).abs().max() > 0


def test_masked_input_keeps_lungs_and_fills_background() -> None:
    t = teacher()
    x = torch.rand(2, 3, 32, 32) + 5.0  # outside the noise range, to tell the two apart
    masked, mask = t.masked_input(x)
    assert mask.shape == (2, 1, 32, 32) and set(mask.unique().tolist()) == {0.0, 1.0}
    inside = mask.expand_as(x).bool()
    torch.testing.assert_close(masked[inside], x[inside])
    assert masked[~inside].min() >= 0 and masked[~inside].max() <= 1
    zero = teacher(background="zero")
    masked0, _ = zero.masked_input(x)
    assert masked0[~inside].abs().max() == 0


class FirstChannelLogits(nn.Module):
    """A segmenter whose lung logits are the input's first channel: known logits per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


# lung probabilities, two images of 2 x 3 pixels; their logits log(p / (1 - p)) are the input
PROBS = torch.tensor([[[0.10, 0.30, 0.50], [0.85, 0.95, 0.35]], [[0.99, 0.05, 0.45], [0.25, 0.60, 0.92]]])
MASKS = {  # sigmoid(logit) > threshold, written out by hand
    0.2: [[[0, 1, 1], [1, 1, 1]], [[1, 0, 1], [1, 1, 1]]],
    0.4: [[[0, 0, 1], [1, 1, 0]], [[1, 0, 1], [0, 1, 1]]],
    0.9: [[[0, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 0, 1]]],
}


@pytest.mark.parametrize("threshold", sorted(MASKS))
def test_mask_is_the_thresholded_probability(threshold: float) -> None:
    t = TeacherPipeline(FirstChannelLogits(), nn.Identity(), threshold=threshold).eval()
    x = torch.stack([torch.logit(PROBS), torch.full_like(PROBS, 9.0), torch.full_like(PROBS, -9.0)], 1)
    mask = t.lung_mask(x)
    assert mask.shape == (2, 1, 2, 3) and mask.dtype == x.dtype and not mask.requires_grad
    torch.testing.assert_close(mask, torch.tensor(MASKS[threshold], dtype=x.dtype)[:, None], rtol=0, atol=0)
    _, pipeline_mask = t.masked_input(x)  # the mask the classifier's input is built with
    torch.testing.assert_close(pipeline_mask, mask, rtol=0, atol=0)


def test_frozen_segmenter_stays_in_eval_mode_without_gradients() -> None:
    t = TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)).freeze_segmenter()
    t.train()
    assert t.classifier.training and not t.segmenter.training
    assert not any(p.requires_grad for p in t.segmenter.parameters())
    torch.nn.functional.cross_entropy(t(torch.rand(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in t.segmenter.parameters())
    assert t.classifier.class_layers.out.weight.grad is not None


def test_torchscript_export_equals_eager() -> None:
    t = TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)).eval()
    scripted = torch.jit.script(t)
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(3)
    a = t(x)
    torch.manual_seed(3)
    b = scripted(x)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"threshold": 1.2}, "threshold must lie in"), ({"background": "blur"}, "background must be one of")],
)
def test_bad_pipeline_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3), **kwargs)


def test_segmenter_profiles() -> None:
    n_params = {p: sum(q.numel() for q in lung_segmenter(p).parameters()) for p in ("paper", "small")}
    assert 20e6 < n_params["paper"] < 35e6 and n_params["small"] < 1e5
    assert lung_segmenter("small")(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="profile must be one of"):
        lung_segmenter("huge")


def test_registry() -> None:
    assert set(NETWORKS) >= {"densenet121", "resnet18", "lung_segmenter"}
    assert isinstance(build_network("densenet121", num_classes=4), nn.Module)
    with pytest.raises(ValueError, match="unknown network 'vgg'; known: densenet121"):
        build_network("vgg")


def test_load_weights_errors_name_the_file(tmp_path: Path) -> None:
    net = lung_segmenter("small")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist; train it first"):
        load_weights(net, tmp_path / "nope.pt")
    torch.save({"model": densenet121(num_classes=3).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match=r"other\.pt does not fit UNet"):
        load_weights(net, tmp_path / "other.pt")
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    load_weights(lung_segmenter("small"), tmp_path / "bare.pt")


@pytest.mark.parametrize("background", ["uniform", "zero"])
def test_load_teacher_rebuilds_the_background_it_was_trained_with(tmp_path: Path, background: str) -> None:
    from tea_med.networks import load_teacher

    saved = TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3), 0.4, background=background)
    torch.save(saved.state_dict(), tmp_path / "model.pt")
    loaded = load_teacher(tmp_path / "model.pt", segmenter_profile="small", background=background)
    x = torch.rand(1, 3, 32, 32) + 5.0  # outside the noise range
    masked, mask = loaded.masked_input(x)
    outside = masked[~mask.expand_as(x).bool()]
    assert outside.numel() > 0
    if background == "zero":
        assert outside.abs().max() == 0
    else:
        assert outside.min() >= 0 and outside.max() <= 1 and outside.std() > 0.1  # U(0, 1) noise
    with pytest.raises(ValueError, match="background must be one of"):
        load_teacher(tmp_path / "model.pt", segmenter_profile="small", background="black")
