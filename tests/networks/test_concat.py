"""DenseNet's channel concatenation with a cheap double backward: same numbers as torch.cat."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets.densenet import _DenseLayer

from tea_med.explain import LRPEpsilon
from tea_med.losses import TEALoss
from tea_med.networks import FastDenseLayer, densenet121, use_fast_double_backward
from tea_med.networks.concat import channel_concat

DT = torch.float64


def test_derivatives_match_finite_differences() -> None:
    a = torch.randn(2, 3, 4, 3, dtype=DT, requires_grad=True)
    b = torch.randn(2, 2, 4, 3, dtype=DT, requires_grad=True)
    assert torch.equal(channel_concat(a, b), torch.cat([a, b], 1))
    assert torch.autograd.gradcheck(channel_concat, (a, b))
    assert torch.autograd.gradgradcheck(channel_concat, (a, b))

    def backward(g: torch.Tensor) -> tuple[torch.Tensor, ...]:  # the split, differentiated again
        aa, bb = a.detach().requires_grad_(), b.detach().requires_grad_()
        return torch.autograd.grad(channel_concat(aa, bb), (aa, bb), g, create_graph=True)

    g = torch.randn(2, 5, 4, 3, dtype=DT, requires_grad=True)
    ga, gb = backward(g)
    assert torch.equal(ga, g[:, :3]) and torch.equal(gb, g[:, 3:])
    assert torch.autograd.gradcheck(backward, (g,))
    assert torch.autograd.gradgradcheck(backward, (g,))


@pytest.mark.parametrize(("batch", "train"), [(3, True), (1, False)])  # 1: the split's views are dense
def test_tea_gradients_equal_those_of_monai_densenet(batch: int, train: bool) -> None:
    """The TEA student path (heatmap with create_graph, loss, backward) through DenseNet121:
    every weight gradient equals the one of MONAI's own layers with torch.cat."""
    torch.manual_seed(0)
    plain = densenet121(num_classes=3).double().train(train)
    fast = copy.deepcopy(plain)
    for m in fast.modules():  # only the concatenation differs
        if type(m) is _DenseLayer:
            m.__class__ = FastDenseLayer
    x = torch.rand(batch, 3, 32, 32, dtype=DT)
    target_heat = torch.randn(batch, 3, 32, 32, dtype=DT)
    target = torch.tensor([0, 1, 2])[:batch]
    eps = torch.tensor([1e-2, 3e-3, 1e-3], dtype=DT)[:batch]
    grads, heats = [], []
    for net in (plain, fast):
        h = LRPEpsilon()(net, x, target, eps=eps, create_graph=True)
        TEALoss()(h, target_heat).backward()
        heats.append(h.detach())
        grads.append([p.grad for p in net.parameters() if p.grad is not None])
    torch.testing.assert_close(heats[0], heats[1], rtol=1e-12, atol=0)
    assert len(grads[0]) == len(grads[1]) > 300
    for p, q in zip(*grads, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12 * float(p.abs().max()))


def test_the_switch_keeps_state_dict_parameters_and_outputs() -> None:
    net = densenet121(num_classes=3).eval()
    keys, params = list(net.state_dict()), list(net.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    use_fast_double_backward(net)
    assert sum(type(m) is FastDenseLayer for m in net.modules()) == 6 + 12 + 24 + 16  # DenseNet121's layers
    assert not any(type(m) is _DenseLayer for m in net.modules())
    assert list(net.state_dict()) == keys
    assert all(p is q for p, q in zip(net.parameters(), params, strict=True))
    with torch.no_grad():
        assert torch.equal(net(x), before)
