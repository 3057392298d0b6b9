"""LRP-ready networks and the check that a network is one."""

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
    "LRPResNetBlock",
    "LRPResNetBottleneck",
    "densenet121",
    "lrp_ready",
    "probe_input",
    "resnet18",
    "resnet34",
    "resnet50",
]
