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

#: the student bundle's ``heatmap_loss`` setting: the TEA loss and its ablations (Table 5)
HEATMAP_LOSSES = ("tea", "l1", "l2", "single_resolution")


def make_heatmap_loss(name: str) -> HeatmapLoss:
    """``tea`` (multi-resolution geometric L1, Eq. 2), ``l1`` / ``l2`` (individually normalised,
    Eqs. C12-C13) or ``single_resolution`` (Eq. 1 at full resolution only)."""
    if name not in HEATMAP_LOSSES:
        raise ValueError(f"heatmap_loss must be one of {', '.join(HEATMAP_LOSSES)}, got {name!r}")
    if name == "l1":
        return L1NormalizedLoss()
    if name == "l2":
        return L2NormalizedLoss()
    return TEALoss(multi_resolution=name == "tea")


__all__ = [
    "HEATMAP_LOSSES",
    "LOSSES",
    "HeatmapLoss",
    "L1NormalizedLoss",
    "L2NormalizedLoss",
    "TEALoss",
    "geometric_l1_distance",
    "individual_l1_distance",
    "individual_l2_distance",
    "make_heatmap_loss",
    "resolution_levels",
]
