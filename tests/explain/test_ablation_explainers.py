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


def test_spatial_attention_matches_its_definition(net: torch.nn.Module) -> None:
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    a = net.relu2(net.conv2(net.pool1(net.relu1(net.bn1(net.conv1(x))))))
    q = a.pow(2).sum(1, keepdim=True)
    q = q / q.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = F.interpolate(q, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        SpatialAttention(layer="relu2")(net, x, torch.tensor([0, 1])), expected.detach()
    )


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
