"""LRP-ready networks and the check that a network is one."""

from tea_med.networks.batchnorm import (
    FastBatchNorm1d,
    FastBatchNorm2d,
    FastBatchNorm3d,
    use_fast_double_backward,
)
from tea_med.networks.checkpoints import load_weights
from tea_med.networks.classifiers import (
    LRPResNetBlock,
    LRPResNetBottleneck,
    densenet121,
    resnet18,
    resnet34,
    resnet50,
)
from tea_med.networks.lrp_ready import lrp_ready, probe_input
from tea_med.networks.registry import NETWORKS, build_network
from tea_med.networks.segmenter import SEGMENTER_PROFILES, lung_segmenter
from tea_med.networks.teacher import TeacherPipeline

__all__ = [
    "NETWORKS",
    "SEGMENTER_PROFILES",
    "FastBatchNorm1d",
    "FastBatchNorm2d",
    "FastBatchNorm3d",
    "LRPResNetBlock",
    "LRPResNetBottleneck",
    "TeacherPipeline",
    "build_network",
    "densenet121",
    "load_weights",
    "lrp_ready",
    "lung_segmenter",
    "probe_input",
    "resnet18",
    "resnet34",
    "resnet50",
    "use_fast_double_backward",
]
