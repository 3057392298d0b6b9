"""Parameter gradients of TEALoss(student heatmap, fixed target) against finite differences.

This is the test that catches the classic trap: a ReLU rule baked into the forward graph keeps
modifying the *second* backward (loss -> weights), so the heatmap is right but the weight
gradients are a few percent off. The last test builds that trap on purpose and checks that
gradcheck rejects it, i.e. that this test can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers.nets import NetA, NetB, randomize_batchnorm
from torch import nn
from torch.func import functional_call

from tea_med.explain import Explainer, GradientXInput, InputGradient, LRPEpsilon
from tea_med.losses import TEALoss

DT = torch.float64


class Functional(nn.Module):
    """Runs ``net`` with the parameters given as tensors, so gradcheck can perturb them."""

    def __init__(self, net: nn.Module, params: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, dict(zip(self.names, self.params, strict=True)), (x,))


def loss_of_params(net: nn.Module, explainer: Explainer, x, target, eps, heat_target):
    loss = TEALoss()

    def f(*params: torch.Tensor) -> torch.Tensor:
        h = explainer(Functional(net, params), x, target, eps=eps, create_graph=True)
        return loss(h, heat_target)

    return f


def setup(net_cls: type[nn.Module], train_bn: bool = False) -> tuple[Any, ...]:
    net = randomize_batchnorm(net_cls()).double()
    net.train(train_bn)
    side = 8 if net_cls is NetA else 6
    x = torch.randn(3, 2, side, side, dtype=DT)
    target = torch.tensor([0, 1, 2])
    eps = torch.tensor([0.1, 0.05, 0.2], dtype=DT)
    heat_target = torch.randn(3, 2, side, side, dtype=DT)
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    return net, x, target, eps, heat_target, params


EXPLAINERS = {
    "lrp_epsilon": LRPEpsilon(validate="never"),
    "gradient_x_input": GradientXInput(),
    "input_gradient": InputGradient(),
}


@pytest.mark.parametrize("net_cls", [NetA, NetB], ids=["NetA", "NetB"])
@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_tea_loss_parameter_gradient_matches_finite_differences(name: str, net_cls: type[nn.Module]) -> None:
    net, x, target, eps, heat_target, params = setup(net_cls)
    f = loss_of_params(net, EXPLAINERS[name], x, target, eps, heat_target)
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_with_batchnorm_in_train_mode() -> None:
    """The student's default batch-norm mode: batch statistics inside the heatmap's graph."""
    net, x, target, eps, heat_target, params = setup(NetA, train_bn=True)
    running = [b.clone() for b in net.buffers()]
    f = loss_of_params(net, LRPEpsilon(validate="never"), x, target, eps, heat_target)
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(running, net.buffers(), strict=True))


class _BakedEpsilonReLU(torch.autograd.Function):
    """The trap: a ReLU whose backward always applies a / (a + eps), in every backward pass."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float) -> torch.Tensor:
        a = z.clamp_min(0)
        ctx.save_for_backward(a)
        ctx.eps = eps
        return a

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (a,) = ctx.saved_tensors
        return g * a / (a + ctx.eps), None


class _TrapNet(nn.Module):
    def __init__(self, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 16, 3)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _BakedEpsilonReLU.apply(self.conv(x), self.eps)
        return self.fc(torch.nn.functional.avg_pool2d(h, 2).flatten(1))


def test_gradcheck_rejects_a_rule_baked_into_the_forward_graph() -> None:
    net = _TrapNet(eps=0.1).double()
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    target = torch.tensor([0, 2])
    heat_target = torch.randn(2, 2, 8, 8, dtype=DT)
    params = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    f = loss_of_params(net, GradientXInput(), x, target, None, heat_target)
    assert not torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False)
