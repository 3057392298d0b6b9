"""The TEA loss and its ablation variants."""

from tea_med.losses.tea import (
    HeatmapLoss,
    L1NormalizedLoss,
    L2NormalizedLoss,
    TEALoss,
    geometric_l1_distance,
    individual_l1_distance,
    individual_l2_distance,
    resolution_levels,
)

LOSSES: dict[str, type[HeatmapLoss]] = {
    "tea": TEALoss,
    "l1_normalized": L1NormalizedLoss,
    "l2_normalized": L2NormalizedLoss,
}

__all__ = [
    "LOSSES",
    "HeatmapLoss",
    "L1NormalizedLoss",
    "L2NormalizedLoss",
    "TEALoss",
    "geometric_l1_distance",
    "individual_l1_distance",
    "individual_l2_distance",
    "resolution_levels",
]
