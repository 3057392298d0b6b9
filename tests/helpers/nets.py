"""Small networks used by the explainer tests (float64, eval mode, random batch-norm statistics)."""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(model: nn.Module, gen: torch.Generator | None = None) -> nn.Module:
    """Give every batch-norm non-trivial statistics and affine parameters (so it is not identity)."""
    g = gen or torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def zero_biases(model: nn.Module) -> nn.Module:
    """Remove every additive bias (conv/linear bias, batch-norm shift and mean): a conservative net."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.bias.zero_()
            elif getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
                m.bias.zero_()
    return model


class NetA(nn.Module):
    """conv -> BN -> ReLU -> max-pool -> conv -> ReLU -> avg-pool -> linear -> ReLU -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16, 6)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        h = self.pool2(self.relu2(self.conv2(h)))
        return self.fc2(self.relu3(self.fc1(h.flatten(1))))


class NetB(nn.Module):
    """Concatenation and a residual add: r1 feeds a branch, the concat and the residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(5, 3, 1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AvgPool2d(3)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r1 = self.relu1(self.conv1(x))
        r2 = self.relu2(self.bn2(self.conv2(r1)))
        r3 = self.relu3(self.conv3(torch.cat([r1, r2], 1)) + r1)
        return self.fc(self.pool(r3).flatten(1))


def small_nets() -> dict[str, nn.Module]:
    return {
        "NetA": randomize_batchnorm(NetA()).double().eval(),
        "NetB": randomize_batchnorm(NetB()).double().eval(),
    }
