"""Training-mode batch-norm with a fast, exact double backward (for heatmaps that are trained).

TEA differentiates through a backward pass: the student's heatmap is built with
``create_graph=True`` and the loss on it is differentiated again. With batch-norm in training
mode (the student's default), PyTorch's generic ``batchnorm_double_backward`` dominates the TEA
step (about 40% of it for DenseNet121 at 224 px). This module computes the same derivatives
from closed forms, per channel ``c`` with ``M`` elements, ``x̂ = (x - μ) r``, ``r = 1/σ``,
``P(v) = v - mean(v) - x̂ mean(v x̂)``:

    gx = w r P(gy)                      (the ordinary first backward)
    d<ggx, gx>/dgy = w r P(ggx)
    d<ggx, gx>/dw  = r Σ ggx P(gy)
    d<ggx, gx>/dx  = -w r² [ K x̂ + mean(ggx x̂) P(gy) + mean(gy x̂) P(ggx) ],
                     K = mean(ggx gy) - mean(gy) mean(ggx) - mean(gy x̂) mean(ggx x̂)

plus the (simple) terms for the weight and bias gradients. ``tests/networks`` checks it with
``gradgradcheck`` and against PyTorch's own implementation.

:func:`tea_med.networks.use_fast_double_backward` switches a model's ``nn.BatchNorm*d``
modules to these classes in place (same parameters, buffers and state-dict keys). Outside
training mode, and for non-affine or untracked batch-norm, they behave exactly like their
parent class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def _channel_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.view(1, -1, *([1] * (ndim - 2)))


class _BatchNormTrainBackward(torch.autograd.Function):
    """``(gy, x, w) -> (gx, gw, gb)`` of training-mode batch-norm, with a closed-form backward."""

    @staticmethod
    def forward(
        ctx: Any,
        gy: torch.Tensor,
        x: torch.Tensor,
        w: torch.Tensor,
        mean: torch.Tensor,
        invstd: torch.Tensor,
        eps: float,
        need_w: bool,
        need_b: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        # gw = Σ gy x̂ and gb = Σ gy come almost free with gx; the double backward reuses them.
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            gy, x, w, None, None, mean, invstd, True, eps, [True, True, True]
        )
        ctx.save_for_backward(gy, x, w, mean, invstd, gw, gb)
        ctx.set_materialize_grads(False)
        return gx, (gw if need_w else None), (gb if need_b else None)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: torch.Tensor | None, ggw: torch.Tensor | None, ggb: torch.Tensor | None):
        gy, x, w, mean, invstd, sum_gy_xhat, sum_gy = ctx.saved_tensors
        nd = x.ndim
        dims = [0, *range(2, nd)]
        m = x.numel() // x.shape[1]

        def cv(v: torch.Tensor) -> torch.Tensor:
            return _channel_view(v, nd)

        r, mu, wv = cv(invstd), cv(mean), cv(w)
        A, B = cv(sum_gy) / m, cv(sum_gy_xhat) / m  # mean(gy), mean(gy x̂)
        grad_gy = grad_x = grad_w = None
        if ggx is not None:
            C = ggx.mean(dims, keepdim=True)
            D = r * ((ggx * x).mean(dims, keepdim=True) - mu * C)  # mean(ggx x̂)
            E = (ggx * gy).mean(dims, keepdim=True)
            K = E - A * C - B * D
            # grad_gy = w r P(ggx) = w r (ggx - C - x̂ D), expanded in x (no x̂ tensor)
            wr = wv * r
            grad_gy = (ggx * wr).addcmul_(x, -wr * r * D).add_(wr * (r * D * mu - C))
            # grad_x = -w r² [K x̂ + D P(gy) + B P(ggx)] = -w r² [K2 x̂ + D gy + B ggx - (D A + B C)]
            K2 = K - 2 * B * D
            s = -wv * r * r
            grad_x = (x * (s * r * K2)).addcmul_(gy, s * D).addcmul_(ggx, s * B)
            grad_x.add_(s * (-K2 * r * mu - D * A - B * C))
            grad_w = (r * K).reshape(-1) * m
        if ggw is not None or ggb is not None:
            xhat = (x - mu) * r
        if ggw is not None:  # gw = Σ gy x̂: d/dgy = x̂, d/dx = r P(gy)
            gw_v = cv(ggw)
            p_gy = torch.addcmul(gy - A, xhat, -B)
            grad_gy = xhat * gw_v if grad_gy is None else grad_gy.addcmul_(xhat, gw_v)
            term = p_gy * (gw_v * r)
            grad_x = term if grad_x is None else grad_x.add_(term)
        if ggb is not None:  # gb = Σ gy: d/dgy = 1
            gb_v = cv(ggb).expand_as(gy)
            grad_gy = gb_v.clone() if grad_gy is None else grad_gy.add_(gb_v)
        return grad_gy, grad_x, grad_w, None, None, None, None, None


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch-norm whose backward is itself differentiable in closed form."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        y, mean, invstd = torch.ops.aten.native_batch_norm(
            x, w, b, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(x, w, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor):
        x, w, mean, invstd = ctx.saved_tensors
        need_w, need_b = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gx, gw, gb = _BatchNormTrainBackward.apply(gy, x, w, mean, invstd, ctx.eps, need_w, need_b)
        return gx, gw, gb, None, None, None, None


class _FastDoubleBackwardMixin:
    """Training-mode forward through :class:`_BatchNormTrain`; anything else: the parent's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: Any = self
        if not (bn.training and bn.affine and bn.track_running_stats and torch.is_grad_enabled()):
            return super().forward(x)  # type: ignore[misc]  # mixin: forward comes from the nn.BatchNorm base
        bn._check_input_dim(x)
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return _BatchNormTrain.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps)


class FastBatchNorm1d(_FastDoubleBackwardMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with a fast exact double backward in training mode."""


class FastBatchNorm2d(_FastDoubleBackwardMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with a fast exact double backward in training mode."""


class FastBatchNorm3d(_FastDoubleBackwardMixin, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` with a fast exact double backward in training mode."""


#: module class -> its class with the closed-form double backward (swapped in place)
FAST_BATCHNORM: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: FastBatchNorm1d,
    nn.BatchNorm2d: FastBatchNorm2d,
    nn.BatchNorm3d: FastBatchNorm3d,
}
