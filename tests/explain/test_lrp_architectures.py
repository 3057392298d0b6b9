"""LRPEpsilon on real architectures against a second, independent relevance propagation.

The reference walks LRP-ready DenseNet121 and ResNet18 module by module (float64, eval mode):
batch-norm is folded into the preceding convolution (or, after a concatenation, used as a
diagonal affine map of its own), and relevance is propagated with explicit rules:

* affine map feeding a ReLU (LRP-ε):  R_in = a * W^T (R_out / (z + eps * sign(z)))
* affine map not feeding a ReLU (LRP-0), average pooling, the classifier head: same with ε = 0
* max pooling: winner takes all (scatter-add to the arg-max)
* concatenation: split; residual sum before a ReLU: one affine map of both summands

``W^T`` of a convolution is applied with ``conv_transpose2d``. No autograd anywhere.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.nets import randomize_batchnorm
from torch import nn

from tea_med.explain import LRPEpsilon
from tea_med.networks import densenet121, resnet18

DT = torch.float64


def stab(z: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    if isinstance(eps, float) and eps == 0.0:
        return torch.where(z == 0, torch.ones_like(z), z)  # R is 0 there
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias - bn.running_mean * s


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    w = conv.weight
    b = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=DT)
    if bn is None:
        return w, b
    s, t = bn_affine(bn)
    return w * s.view(-1, 1, 1, 1), b * s + t


def conv_adjoint(q: torch.Tensor, conv: nn.Conv2d, w: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    base = (q.shape[-1] - 1) * s - 2 * p + k
    return F.conv_transpose2d(q, w, None, s, p, output_padding=in_shape[-1] - base)


def lrp_conv(a, conv, bn, R, eps):
    w, b = fold(conv, bn)
    z = F.conv2d(a, w, b, conv.stride, conv.padding)
    return a * conv_adjoint(R / stab(z, eps), conv, w, a.shape)


def lrp_bn(a: torch.Tensor, bn: nn.BatchNorm2d, R: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    s, t = bn_affine(bn)
    z = a * s.view(1, -1, 1, 1) + t.view(1, -1, 1, 1)
    return a * s.view(1, -1, 1, 1) * (R / stab(z, eps))


def lrp_avgpool2(a: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    z = F.avg_pool2d(a, 2)
    up = (R / stab(z, 0.0)).repeat_interleave(2, -1).repeat_interleave(2, -2) / 4
    return a * F.pad(up, (0, a.shape[-1] - up.shape[-1], 0, a.shape[-2] - up.shape[-2]))


def lrp_global_avg(a: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    z = a.mean((2, 3))
    return a * (R / stab(z, 0.0))[:, :, None, None] / (a.shape[2] * a.shape[3])


def lrp_maxpool(a: torch.Tensor, pool: nn.MaxPool2d, R: torch.Tensor) -> torch.Tensor:
    _, idx = F.max_pool2d(a, pool.kernel_size, pool.stride, pool.padding, return_indices=True)
    out = torch.zeros_like(a).flatten(2)
    return out.scatter_add_(2, idx.flatten(2), R.flatten(2)).view_as(a)


def lrp_head(p: torch.Tensor, fc: nn.Linear, target: torch.Tensor) -> torch.Tensor:
    """Relevance of the pooled features for logit ``target`` (LRP-0 of the last linear layer)."""
    return p * fc.weight[target]


def relu(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(0)


def reference_densenet(
    net: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    f = net.features
    a0 = relu(F.conv2d(x, *fold(f.conv0, f.norm0), f.conv0.stride, f.conv0.padding))
    h = f.pool0(a0)
    trace = []  # (kind, module, input) in forward order
    for name, block in f.named_children():
        if name.startswith("denseblock"):
            for layer in block.children():
                trace.append(("dense", layer, h))
                L = layer.layers
                r1 = relu(L.norm1(h))
                r2 = relu(L.norm2(L.conv1(r1)))
                h = torch.cat([h, L.conv2(r2)], 1)
        elif name.startswith("transition"):
            trace.append(("transition", block, h))
            h = F.avg_pool2d(block.conv(relu(block.norm(h))), 2)
    r5 = relu(f.norm5(h))
    R = lrp_global_avg(r5, lrp_head(r5.mean((2, 3)), net.class_layers.out, target))
    R = lrp_bn(h, f.norm5, R, eps)
    for kind, module, inp in reversed(trace):
        if kind == "transition":
            tr = relu(module.norm(inp))
            tc = module.conv(tr)
            R = lrp_conv(tr, module.conv, None, lrp_avgpool2(tc, R), 0.0)
            R = lrp_bn(inp, module.norm, R, eps)
        else:
            L = module.layers
            c_in = inp.shape[1]
            r1 = relu(L.norm1(inp))
            r2 = relu(L.norm2(L.conv1(r1)))
            R_new = lrp_conv(r2, L.conv2, None, R[:, c_in:], 0.0)
            R_r1 = lrp_conv(r1, L.conv1, L.norm2, R_new, eps)
            R = R[:, :c_in] + lrp_bn(inp, L.norm1, R_r1, eps)
    return lrp_conv(x, f.conv0, f.norm0, lrp_maxpool(a0, f.pool0, R), eps)


def reference_resnet(
    net: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    a0 = relu(F.conv2d(x, *fold(net.conv1, net.bn1), net.conv1.stride, net.conv1.padding))
    h = net.maxpool(a0)
    trace = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            trace.append((block, h))
            h = block(h)
    R = lrp_global_avg(h, lrp_head(h.mean((2, 3)), net.fc, target))
    for block, inp in reversed(trace):
        hid = relu(F.conv2d(inp, *fold(block.conv1, block.bn1), block.conv1.stride, block.conv1.padding))
        w2, b2 = fold(block.conv2, block.bn2)
        u = F.conv2d(hid, w2, b2, block.conv2.stride, block.conv2.padding)
        if block.downsample is None:
            res = inp
        else:
            ds_conv, ds_bn = block.downsample[0], block.downsample[1]
            wd, bd = fold(ds_conv, ds_bn)
            res = F.conv2d(inp, wd, bd, ds_conv.stride, ds_conv.padding)
        q = R / stab(u + res, eps)  # the residual sum feeds act2: one affine map of (hid, inp)
        R_hid = hid * conv_adjoint(q, block.conv2, w2, hid.shape)
        R_res = inp * q if block.downsample is None else inp * conv_adjoint(q, ds_conv, wd, inp.shape)
        R = R_res + lrp_conv(inp, block.conv1, block.bn1, R_hid, eps)
    return lrp_conv(x, net.conv1, net.bn1, lrp_maxpool(a0, net.maxpool, R), eps)


ARCHS = {"densenet121": (densenet121, reference_densenet), "resnet18": (resnet18, reference_resnet)}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_lrp_epsilon_matches_independent_propagation(arch: str) -> None:
    build, reference = ARCHS[arch]
    net = randomize_batchnorm(build(num_classes=3)).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=DT)
    target = torch.tensor([2, 0])
    eps = torch.tensor([1e-2, 3e-3], dtype=DT)
    heat = LRPEpsilon(validate="always")(net, x, target, eps=eps)
    with torch.no_grad():
        ref = reference(net, x, target, eps.view(-1, 1, 1, 1))
    rel = float((heat - ref).norm() / ref.norm())
    assert rel <= 1e-6, f"{arch}: relative error {rel:.2e}"
    # The reference is not trivially equal to gradient x input: ε matters at this scale.
    with torch.no_grad():
        ref_big = reference(net, x, target, torch.full((2, 1, 1, 1), 1.0, dtype=DT))
    assert float((ref_big - ref).norm() / ref.norm()) > 1e-3


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_conservation_real_architectures(arch: str) -> None:
    """ε -> 0 and zero biases (default init: BN shift/mean 0, linear bias 0): sum(H) == logit."""
    build, _ = ARCHS[arch]
    net = build(num_classes=3).double().eval()
    for m in net.modules():
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    x = torch.rand(3, 3, 32, 32, dtype=DT)
    target = torch.tensor([0, 1, 2])
    e = LRPEpsilon().explain(net, x, target, eps=1e-12)
    torch.testing.assert_close(
        e.heatmap.flatten(1).sum(1), e.logits.gather(1, target[:, None])[:, 0], rtol=1e-6, atol=1e-9
    )
