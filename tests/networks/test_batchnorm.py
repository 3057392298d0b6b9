"""Fast training-mode batch-norm: identical to nn.BatchNorm*d, with an exact double backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tea_med.explain import LRPEpsilon
from tea_med.losses import TEALoss
from tea_med.networks import FastBatchNorm2d, densenet121, use_fast_double_backward

DT = torch.float64
CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SHAPES = {1: (6, 3, 5), 2: (4, 3, 5, 4), 3: (2, 3, 3, 4, 3)}


def fast_module(dims: int, **kwargs: object) -> nn.Module:
    bn = CLASSES[dims](3, **kwargs).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    return use_fast_double_backward(bn)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_second_derivatives_match_finite_differences(dims: int) -> None:
    bn = fast_module(dims)
    assert type(bn).__name__ == f"FastBatchNorm{dims}d"
    x = torch.randn(SHAPES[dims], dtype=DT, requires_grad=True)
    w = bn.weight.detach().clone().requires_grad_()
    b = bn.bias.detach().clone().requires_grad_()

    def f(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(bn, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_same_results_as_pytorch_batchnorm_in_a_tea_like_double_backward(momentum: float | None) -> None:
    torch.manual_seed(3)
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, momentum=momentum), nn.ReLU()).double()
    fast = use_fast_double_backward(copy.deepcopy(plain))
    x = torch.randn(4, 2, 7, 7, dtype=DT)
    v = torch.randn(4, 3, 5, 5, dtype=DT)
    results = []
    for net in (plain, fast):
        xx = x.clone().requires_grad_()
        (g,) = torch.autograd.grad((net(xx) * v).sum(), xx, create_graph=True)
        (g.abs().sum() + (g * x).pow(2).sum()).backward()
        results.append([*(p.grad for p in net.parameters()), *net.buffers()])
        net(x)  # a second step updates the running statistics again
        results[-1].extend(b.clone() for b in net.buffers())
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def test_eval_mode_and_no_grad_use_the_parent_implementation() -> None:
    bn = fast_module(2).eval()
    x = torch.randn(SHAPES[2], dtype=DT)
    torch.testing.assert_close(bn(x), nn.BatchNorm2d.forward(bn, x))
    bn.train()
    before = bn.num_batches_tracked.clone()
    with torch.no_grad():
        y = bn(x)
    assert bn.num_batches_tracked == before + 1
    torch.testing.assert_close(y.mean((0, 2, 3)), bn.bias.detach(), atol=1e-10, rtol=0)


def test_state_dict_and_parameters_unchanged_by_the_switch() -> None:
    net = densenet121(num_classes=3)
    keys = list(net.state_dict())
    params = list(net.parameters())
    use_fast_double_backward(net)
    assert list(net.state_dict()) == keys
    assert all(p is q for p, q in zip(net.parameters(), params, strict=True))
    assert all(type(m) is not nn.BatchNorm2d for m in net.modules())
    assert sum(isinstance(m, FastBatchNorm2d) for m in net.modules()) == 121


def test_tea_parameter_gradient_matches_with_fast_batchnorm() -> None:
    """The whole TEA student path in train mode: identical weight gradients to PyTorch's own BN."""
    torch.manual_seed(0)
    plain = densenet121(num_classes=3).double().train()
    fast = use_fast_double_backward(copy.deepcopy(plain))
    x = torch.rand(3, 3, 32, 32, dtype=DT)
    target_heat = torch.randn(3, 3, 32, 32, dtype=DT)
    grads = []
    for net in (plain, fast):
        h = LRPEpsilon()(
            net, x, torch.tensor([0, 1, 2]), eps=torch.tensor([1e-2, 3e-3, 1e-3]), create_graph=True
        )
        TEALoss()(h, target_heat).backward()
        grads.append([p.grad for p in net.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 300
    for a, b in zip(*grads, strict=True):  # per tensor: gradients span 1e2..1e6 here
        assert float((a - b).norm() / a.norm()) < 1e-8
