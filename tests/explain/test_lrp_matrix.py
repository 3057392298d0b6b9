"""LRPEpsilon against an explicit, layer-by-layer LRP-ε written in matrix form (float64).

Every linear map (convolution, folded eval batch-norm, average pooling, linear layer) is
materialised as a dense matrix ``W`` with bias ``b``; relevance goes down with

    R_in = a * W^T (R_out / (z + eps * sign(z))),   z = W a + b,

with ε where the layer's output feeds a ReLU and ε = 0 (LRP-0) elsewhere; max pooling passes
relevance to the winner; a concatenation splits it; a residual sum before a ReLU is one
affine map of both summands. Nothing here uses autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from helpers.nets import NetA, NetB, randomize_batchnorm, zero_biases
from torch import nn

from tea_med.explain import GradientXInput, LRPEpsilon

DT = torch.float64


def conv_matrix(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    n_in = math.prod(in_shape)
    basis = torch.eye(n_in, dtype=DT).view(n_in, *in_shape)
    out = F.conv2d(basis, conv.weight, None, conv.stride, conv.padding)
    W = out.reshape(n_in, -1).T.contiguous()
    b = torch.zeros(out.shape[1:], dtype=DT)
    if conv.bias is not None:
        b = b + conv.bias.view(-1, 1, 1)
    return W, b.reshape(-1)


def fold_bn(
    W: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d, spatial: int
) -> tuple[torch.Tensor, torch.Tensor]:
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    t = bn.bias - bn.running_mean * s
    s_full, t_full = s.repeat_interleave(spatial), t.repeat_interleave(spatial)
    return s_full[:, None] * W, s_full * b + t_full


def avgpool_matrix(channels: int, side: int, k: int) -> torch.Tensor:
    out_side = side // k
    W = torch.zeros(channels * out_side**2, channels * side**2, dtype=DT)
    for c in range(channels):
        for i in range(out_side):
            for j in range(out_side):
                row = (c * out_side + i) * out_side + j
                for di in range(k):
                    for dj in range(k):
                        W[row, (c * side + i * k + di) * side + j * k + dj] = 1.0 / k**2
    return W


def maxpool_winners(a: torch.Tensor, channels: int, side: int, k: int) -> list[int]:
    """For each pooled output (flat index), the flat input index of its maximum."""
    a = a.view(channels, side, side)
    winners = []
    for c in range(channels):
        for i in range(side // k):
            for j in range(side // k):
                win = a[c, i * k : (i + 1) * k, j * k : (j + 1) * k]
                di, dj = divmod(int(win.argmax()), k)
                winners.append((c * side + i * k + di) * side + j * k + dj)
    return winners


def stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(DT)


def ratio(R: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """R / d with 0 where d == 0 (there R is 0 too: no relevance reaches a zero pre-activation)."""
    return torch.where(d == 0, torch.zeros_like(R), R / torch.where(d == 0, torch.ones_like(d), d))


def lrp_affine(
    a: torch.Tensor, W: torch.Tensor, b: torch.Tensor, R_out: torch.Tensor, eps: float
) -> torch.Tensor:
    z = W @ a + b
    return a * (W.T @ ratio(R_out, stab(z, eps)))


def lrp_net_a(net: NetA, x: torch.Tensor, c: int, eps: float) -> torch.Tensor:
    W1, b1 = fold_bn(*conv_matrix(net.conv1, (2, 8, 8)), net.bn1, 64)
    W2, b2 = conv_matrix(net.conv2, (3, 4, 4))
    return lrp_conv_bn_relu_pool_net(
        net, x, c, eps, (W1, b1), (W2, b2), avgpool_matrix(4, 4, 2), lambda a1: maxpool_winners(a1, 3, 8, 2)
    )


def lrp_conv_bn_relu_pool_net(
    net: NetA | Net3D,
    x: torch.Tensor,
    c: int,
    eps: float,
    layer1: tuple[torch.Tensor, torch.Tensor],
    layer2: tuple[torch.Tensor, torch.Tensor],
    Wp: torch.Tensor,
    winners: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """conv+BN -> ReLU -> max-pool -> conv -> ReLU -> avg-pool -> fc -> ReLU -> fc, in matrix form:
    ε at every affine map that feeds a ReLU, LRP-0 at the average pool and the last layer."""
    (W1, b1), (W2, b2) = layer1, layer2
    a0 = x.reshape(-1)
    a1 = torch.relu(W1 @ a0 + b1)
    win = winners(a1)
    p1 = a1[win]
    a2 = torch.relu(W2 @ p1 + b2)
    p2 = Wp @ a2
    a3 = torch.relu(net.fc1.weight @ p2 + net.fc1.bias)
    z = net.fc2.weight @ a3 + net.fc2.bias
    R = torch.zeros_like(z)
    R[c] = z[c]
    R = lrp_affine(a3, net.fc2.weight, net.fc2.bias, R, 0.0)
    R = lrp_affine(p2, net.fc1.weight, net.fc1.bias, R, eps)
    R = lrp_affine(a2, Wp, torch.zeros(Wp.shape[0], dtype=DT), R, 0.0)
    R = lrp_affine(p1, W2, b2, R, eps)
    R_a1 = torch.zeros_like(a1)
    R_a1[win] += R  # winner takes all
    return lrp_affine(a0, W1, b1, R_a1, eps).view_as(x)


def lrp_net_b(net: NetB, x: torch.Tensor, c: int, eps: float) -> torch.Tensor:
    W1, b1 = conv_matrix(net.conv1, (2, 6, 6))
    W2, b2 = fold_bn(*conv_matrix(net.conv2, (3, 6, 6)), net.bn2, 36)
    W3, b3 = conv_matrix(net.conv3, (5, 6, 6))
    Wp = avgpool_matrix(3, 6, 3)
    a0 = x.reshape(-1)
    r1 = torch.relu(W1 @ a0 + b1)
    r2 = torch.relu(W2 @ r1 + b2)
    cat = torch.cat([r1, r2])  # channel-major flattening: concat == stacking the vectors
    z3 = W3 @ cat + b3 + r1
    r3 = torch.relu(z3)
    p = Wp @ r3
    z = net.fc.weight @ p + net.fc.bias
    R = torch.zeros_like(z)
    R[c] = z[c]
    R = lrp_affine(p, net.fc.weight, net.fc.bias, R, 0.0)
    R_r3 = lrp_affine(r3, Wp, torch.zeros(Wp.shape[0], dtype=DT), R, 0.0)
    q = ratio(R_r3, stab(z3, eps))  # z3 = W3 cat + b3 + I r1 is one affine map of (cat, r1)
    R_cat = cat * (W3.T @ q)
    R_r1 = r1 * q + R_cat[: r1.numel()]
    R_r2 = R_cat[r1.numel() :]
    R_r1 = R_r1 + lrp_affine(r1, W2, b2, R_r2, eps)
    return lrp_affine(a0, W1, b1, R_r1, eps).view_as(x)


CASES = {"NetA": (NetA, lrp_net_a, 8), "NetB": (NetB, lrp_net_b, 6)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lrp_epsilon_equals_matrix_form(name: str) -> None:
    cls, reference, side = CASES[name]
    net = randomize_batchnorm(cls()).double().eval()
    x = torch.randn(3, 2, side, side, dtype=DT)
    target = torch.tensor([0, 2, 1])
    eps = torch.tensor([1e-2, 1e-1, 3e-3], dtype=DT)
    heat = LRPEpsilon(validate="always")(net, x, target, eps=eps)
    for b in range(3):
        with torch.no_grad():
            ref = reference(net, x[b], int(target[b]), float(eps[b]))
        torch.testing.assert_close(heat[b], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matrix_form_differs_from_gradient_x_input(name: str) -> None:
    """The reference is sensitive to ε: at large ε it is far from LRP-0 (the test can fail)."""
    cls, reference, side = CASES[name]
    net = randomize_batchnorm(cls()).double().eval()
    x = torch.randn(2, side, side, dtype=DT)
    with torch.no_grad():
        lrp0 = reference(net, x, 0, 0.0)
        lrp_big = reference(net, x, 0, 1.0)
    assert (lrp0 - lrp_big).abs().max() > 1e-3 * lrp0.abs().max()


class Net3D(nn.Module):
    """Volumes: conv3d -> BN -> ReLU -> max-pool -> conv3d -> ReLU -> avg-pool -> linear -> ReLU -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 2, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool3d(2)
        self.conv2 = nn.Conv3d(2, 3, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool3d(2)
        self.fc1 = nn.Linear(3, 4)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        h = self.pool2(self.relu2(self.conv2(h)))
        return self.fc2(self.relu3(self.fc1(h.flatten(1))))


def conv3d_matrix(conv: nn.Conv3d, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    n_in = math.prod(in_shape)
    basis = torch.eye(n_in, dtype=DT).view(n_in, *in_shape)
    out = F.conv3d(basis, conv.weight, None, conv.stride, conv.padding)
    W = out.reshape(n_in, -1).T.contiguous()
    b = (torch.zeros(out.shape[1:], dtype=DT) + conv.bias.view(-1, 1, 1, 1)).reshape(-1)
    return W, b


def avgpool3d_matrix(channels: int, side: int, k: int) -> torch.Tensor:
    out_side = side // k
    W = torch.zeros(channels * out_side**3, channels * side**3, dtype=DT)
    for c in range(channels):
        for i in range(out_side):
            for j in range(out_side):
                for m in range(out_side):
                    row = ((c * out_side + i) * out_side + j) * out_side + m
                    for di in range(k):
                        for dj in range(k):
                            for dm in range(k):
                                col = ((c * side + i * k + di) * side + j * k + dj) * side + m * k + dm
                                W[row, col] = 1.0 / k**3
    return W


def maxpool3d_winners(a: torch.Tensor, channels: int, side: int, k: int) -> list[int]:
    a = a.view(channels, side, side, side)
    winners = []
    for c in range(channels):
        for i in range(side // k):
            for j in range(side // k):
                for m in range(side // k):
                    win = a[c, i * k : (i + 1) * k, j * k : (j + 1) * k, m * k : (m + 1) * k]
                    di, rest = divmod(int(win.argmax()), k * k)
                    dj, dm = divmod(rest, k)
                    winners.append(((c * side + i * k + di) * side + j * k + dj) * side + m * k + dm)
    return winners


def lrp_net_3d(net: Net3D, x: torch.Tensor, c: int, eps: float) -> torch.Tensor:
    """``x``: one volume [1, 4, 4, 4]; the same layer-by-layer ε-rule as ``lrp_net_a``."""
    W1, b1 = fold_bn(*conv3d_matrix(net.conv1, (1, 4, 4, 4)), net.bn1, 64)
    W2, b2 = conv3d_matrix(net.conv2, (2, 2, 2, 2))
    return lrp_conv_bn_relu_pool_net(
        net,
        x,
        c,
        eps,
        (W1, b1),
        (W2, b2),
        avgpool3d_matrix(3, 2, 2),
        lambda a1: maxpool3d_winners(a1, 2, 4, 2),
    )


def test_lrp_epsilon_equals_matrix_form_3d() -> None:
    """The ε-rule itself on volumes, with ε large enough (0.5) that LRP-ε is far from gradient x input."""
    net = randomize_batchnorm(Net3D()).double().eval()
    x = torch.randn(3, 1, 4, 4, 4, dtype=DT)
    target = torch.tensor([0, 2, 1])
    eps = torch.tensor([0.5, 0.2, 1e-2], dtype=DT)
    heat = LRPEpsilon(validate="always")(net, x, target, eps=eps)
    assert heat.shape == x.shape
    for b in range(3):
        with torch.no_grad():
            ref = lrp_net_3d(net, x[b], int(target[b]), float(eps[b]))
        torch.testing.assert_close(heat[b], ref, rtol=1e-9, atol=1e-12)
    gxi = GradientXInput()(net, x, target)
    assert (heat[0] - gxi[0]).abs().max() > 0.05 * gxi[0].abs().max()  # ε = 0.5 is not LRP-0


@pytest.mark.parametrize("name", sorted(CASES))
def test_conservation_small_nets(name: str) -> None:
    cls, _, side = CASES[name]
    net = zero_biases(randomize_batchnorm(cls())).double().eval()
    x = torch.randn(4, 2, side, side, dtype=DT)
    target = torch.tensor([0, 1, 2, 0])
    e = LRPEpsilon().explain(net, x, target, eps=1e-12)
    torch.testing.assert_close(e.heatmap.flatten(1).sum(1), e.logits.gather(1, target[:, None])[:, 0])
