"""LRP-ready classifiers: MONAI DenseNet121 and ResNets with distinct, out-of-place ReLUs.

MONAI's ``DenseNet121`` qualifies once its ReLUs are not in-place. MONAI's ResNet blocks reuse
one ``act`` module and add the residual in place; :class:`LRPResNetBlock` and
:class:`LRPResNetBottleneck` give each use its own ReLU and add out of place. ReLUs hold no
parameters, so state dicts are interchangeable with MONAI's ``ResNet``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from monai.networks.nets import DenseNet121
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes
from torch import nn

RELU = ("relu", {"inplace": False})


def _distinct_relu(act: nn.Module) -> nn.Module:
    relu = copy.deepcopy(act)
    if hasattr(relu, "inplace"):
        relu.inplace = False  # type: ignore[assignment]  # nn.Module.__setattr__ is typed Tensor | Module
    return relu


class LRPResNetBlock(ResNetBlock):
    """MONAI ``ResNetBlock`` with a second ReLU module (``act2``) and an out-of-place residual add."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.make_lrp_ready()

    def make_lrp_ready(self) -> None:
        self.act = _distinct_relu(self.act)
        self.act2 = _distinct_relu(self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + residual)


class LRPResNetBottleneck(ResNetBottleneck):
    """MONAI ``ResNetBottleneck`` with three distinct ReLUs and an out-of-place residual add."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.make_lrp_ready()

    def make_lrp_ready(self) -> None:
        self.act = _distinct_relu(self.act)
        self.act2 = _distinct_relu(self.act)
        self.act3 = _distinct_relu(self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + residual)


#: MONAI block class -> its LRP-ready replacement (used by ``lrp_ready`` to convert in place).
LRP_BLOCKS: dict[type[nn.Module], type[nn.Module]] = {
    ResNetBlock: LRPResNetBlock,
    ResNetBottleneck: LRPResNetBottleneck,
}


def densenet121(
    spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 3, **kwargs: Any
) -> DenseNet121:
    """MONAI ``DenseNet121`` (one logit per class) with non-in-place ReLUs."""
    _check_classes(num_classes)
    kwargs.setdefault("act", RELU)
    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, **kwargs)


def _resnet(
    block: type[ResNetBlock] | type[ResNetBottleneck],
    layers: list[int],
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    **kw: Any,
) -> ResNet:
    _check_classes(num_classes)
    kw.setdefault("act", RELU)
    return ResNet(
        block=block,
        layers=layers,
        block_inplanes=get_inplanes(),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        num_classes=num_classes,
        **kw,
    )


def resnet18(spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 3, **kwargs: Any) -> ResNet:
    """LRP-ready MONAI ResNet-18; loads MONAI ``resnet18`` state dicts (same keys)."""
    return _resnet(LRPResNetBlock, [2, 2, 2, 2], spatial_dims, in_channels, num_classes, **kwargs)


def resnet34(spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 3, **kwargs: Any) -> ResNet:
    """LRP-ready MONAI ResNet-34; loads MONAI ``resnet34`` state dicts (same keys)."""
    return _resnet(LRPResNetBlock, [3, 4, 6, 3], spatial_dims, in_channels, num_classes, **kwargs)


def resnet50(spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 3, **kwargs: Any) -> ResNet:
    """LRP-ready MONAI ResNet-50; loads MONAI ``resnet50`` state dicts (same keys)."""
    return _resnet(LRPResNetBottleneck, [3, 4, 6, 3], spatial_dims, in_channels, num_classes, **kwargs)


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (one logit per class; TEA cannot explain a single-logit "
            f"head), got {num_classes!r}"
        )
