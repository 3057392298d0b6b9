"""Channel concatenation whose backward is cheap to differentiate (DenseNet's dense layers).

Every dense layer of a DenseNet returns ``cat([x, new], 1)``. PyTorch's backward of ``cat``
slices the incoming gradient; when that backward is itself differentiated (TEA's double
backward, ``create_graph=True``), each slice's derivative allocates a zero tensor of the full
concatenated size, copies its part in, and the two are added: five passes over the full
tensor where one concatenation does. :class:`ChannelConcat` and :class:`ChannelSplit` are each
other's derivative, so the double backward is one ``cat`` per dense layer. The numbers are the
same (the zeros PyTorch adds are exact); DenseNet121's TEA step at 224 px was 11% faster.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets.densenet import _DenseLayer


class ChannelConcat(torch.autograd.Function):
    """``cat([a, b], 1)`` whose backward is :class:`ChannelSplit`."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.split = a.shape[1]
        return torch.cat([a, b], 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = ChannelSplit.apply(grad, ctx.split)
        return first, second


class ChannelSplit(torch.autograd.Function):
    """``(g[:, :n], g[:, n:])`` (views) whose backward is :class:`ChannelConcat`."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return g.narrow(1, 0, n), g.narrow(1, n, g.shape[1] - n)

    @staticmethod
    def backward(ctx: Any, ga: torch.Tensor, gb: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ChannelConcat.apply(ga, gb), None


def channel_concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.cat([a, b], 1)`` with :class:`ChannelConcat`'s cheap double backward."""
    out: torch.Tensor = ChannelConcat.apply(a, b)
    return out


class FastDenseLayer(_DenseLayer):
    """MONAI's DenseNet layer (same modules and state-dict keys) concatenating with
    :func:`channel_concat`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_concat(x, self.layers(x))


#: module class -> its class with a cheap double backward (swapped in place)
FAST_CONCAT: dict[type[torch.nn.Module], type[torch.nn.Module]] = {_DenseLayer: FastDenseLayer}

__all__ = ["FAST_CONCAT", "ChannelConcat", "ChannelSplit", "FastDenseLayer", "channel_concat"]
