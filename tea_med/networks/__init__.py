"""LRP-ready networks and the check that a network is one."""

from tea_med.networks.batchnorm import (
    FastBatchNorm1d,
    FastBatchNorm2d,
    FastBatchNorm3d,
    use_fast_double_backward,
)
from tea_med.networks.classifiers import (
    LRPResNetBlock,
    LRPResNetBottleneck,
    densenet121,
    resnet18,
    resnet34,
    resnet50,
)
from tea_med.networks.lrp_ready import lrp_ready, probe_input

__all__ = [
    "FastBatchNorm1d",
    "FastBatchNorm2d",
    "FastBatchNorm3d",
    "LRPResNetBlock",
    "LRPResNetBottleneck",
    "densenet121",
    "lrp_ready",
    "probe_input",
    "resnet18",
    "resnet34",
    "resnet50",
    "use_fast_double_backward",
]
