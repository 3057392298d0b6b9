"""Grad-CAM, spatial attention, input gradient and gradient x input: formulas and differentiability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.nets import NetA, randomize_batchnorm

from tea_med.explain import EXPLAINERS, GradCAM, GradientXInput, InputGradient, LRPEpsilon, SpatialAttention
from tea_med.networks import densenet121

DT = torch.float64


@pytest.fixture
def net() -> torch.nn.Module:
    return randomize_batchnorm(NetA()).double().eval()


def test_input_gradient_and_gradient_x_input(net: torch.nn.Module) -> None:
    x = torch.randn(3, 2, 8, 8, dtype=DT, requires_grad=True)
    t = torch.tensor([2, 0, 1])
    (g,) = torch.autograd.grad(net(x).gather(1, t[:, None]).sum(), x)
    torch.testing.assert_close(InputGradient()(net, x.detach(), t), g)
    torch.testing.assert_close(GradientXInput()(net, x.detach(), t), x.detach() * g)


def test_lrp_epsilon_tends_to_gradient_x_input(net: torch.nn.Module) -> None:
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    t = torch.tensor([0, 1])
    torch.testing.assert_close(LRPEpsilon()(net, x, t, eps=1e-13), GradientXInput()(net, x, t))


def test_gradcam_matches_its_definition() -> None:
    net = randomize_batchnorm(densenet121(num_classes=3)).double().eval()
    x = torch.rand(2, 3, 64, 64, dtype=DT)
    t = torch.tensor([1, 2])
    feats = torch.relu(net.features(x)).detach().requires_grad_()  # class_layers.relu output
    logits = net.class_layers.out(net.class_layers.flatten(net.class_layers.pool(feats)))
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), feats)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * feats).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)
    default = GradCAM()(net, x, t)
    assert default.shape == (2, 1, 64, 64)
    torch.testing.assert_close(default, expected)
    torch.testing.assert_close(GradCAM(layer="class_layers.relu")(net, x, t), expected)


class PooledFeatures(torch.nn.Module):
    """4x4 input -> ``feat`` (2x2 average pooling, so A is known in closed form) -> linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = torch.nn.AvgPool2d(2)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(x).flatten(1))


def test_spatial_attention_matches_a_hand_computed_map() -> None:
    """A = [[1, 1], [-1, 2]] and [[0, -1], [1, 0]] (channels); Q = Σ_c A_c² = [[1, 2], [2, 4]],
    ||Q|| = 5, Q / ||Q|| = 0.2 u uᵀ with u = (1, 2). Bilinear 2 -> 4 (half-pixel centres) maps u
    to v = (1, 1.25, 1.75, 2), so the map is 0.2 v vᵀ. A second image, 3 A, gives the same map
    (per-sample normalisation); a third, p = 1: Q = [[1, 2], [2, 2]], ||Q|| = sqrt(13)."""
    a = torch.tensor([[[1.0, 1.0], [-1.0, 2.0]], [[0.0, -1.0], [1.0, 0.0]]], dtype=DT)
    x = torch.stack([a, 3 * a]).repeat_interleave(2, -1).repeat_interleave(2, -2)  # 2x2 blocks of A
    net = PooledFeatures().double().eval()
    v = torch.tensor([1.0, 1.25, 1.75, 2.0], dtype=DT)
    expected = (0.2 * torch.outer(v, v)).expand(2, 1, 4, 4)
    heat = SpatialAttention(layer="feat")(net, x, torch.tensor([0, 2]))
    assert heat.shape == (2, 1, 4, 4)
    torch.testing.assert_close(heat, expected, rtol=1e-12, atol=1e-12)
    # class-agnostic: another target gives the same map
    torch.testing.assert_close(SpatialAttention(layer="feat")(net, x, torch.tensor([1, 1])), expected)
    # bilinear 2 -> 4 of [[1, 2], [2, 2]]: each row becomes (a, .75a + .25b, .25a + .75b, b), then the columns
    r0, r1 = torch.tensor([1.0, 1.25, 1.75, 2.0], dtype=DT), torch.full((4,), 2.0, dtype=DT)
    q1 = torch.stack([r0, 0.75 * r0 + 0.25 * r1, 0.25 * r0 + 0.75 * r1, r1])
    heat1 = SpatialAttention(layer="feat", p=1.0)(net, x[:1], torch.tensor([0]))
    torch.testing.assert_close(heat1[0, 0], q1 / 13**0.5, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_every_explainer_is_differentiable_wrt_parameters(name: str, net: torch.nn.Module) -> None:
    explainer = (
        EXPLAINERS[name](layer="relu2") if name in ("gradcam", "spatial_attention") else EXPLAINERS[name]()
    )
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    h = explainer(net, x, torch.tensor([0, 1]), create_graph=True)
    assert h.shape[0] == 2 and h.shape[2:] == x.shape[2:]
    h.abs().sum().backward()
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0
    h2 = explainer(net, x, torch.tensor([0, 1]))
    assert not h2.requires_grad


def test_unknown_layer_is_named_with_choices(net: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"layer 'nope' is not a module of NetA"):
        GradCAM(layer="nope")(net, torch.randn(1, 2, 8, 8, dtype=DT), torch.tensor([0]))


@pytest.mark.parametrize("bad", [torch.tensor([0.5, 1.0]), torch.tensor([0]), torch.tensor([0, 3])])
def test_bad_targets_refused(bad: torch.Tensor, net: torch.nn.Module) -> None:
    with pytest.raises((TypeError, ValueError), match="target"):
        InputGradient()(net, torch.randn(2, 2, 8, 8, dtype=DT), bad)
