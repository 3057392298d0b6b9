"""The shortcut audit: four probes of whether a classifier reads the lungs or the background.

For every image of a split (preprocessed as for testing, with its lung mask):

1. **background relevance share**: the share of positive LRP-ε relevance outside the lungs
   (:func:`tea_med.evaluation.relevance.background_relevance_share`); a network LRP cannot
   explain is reported as refused and the other probes still run;
2. **background swap**: the image's lungs on the background of another image from another
   source (:func:`~tea_med.audit.probes.swap_background`): how often the prediction flips, how
   much the probability of the original prediction moves, and how often the new prediction is the
   donor's class (the shortcut-following rate), overall and as a source-by-source matrix;
3. **lungs removed**: the background kept and the lungs replaced by noise: the confidence left
   and the accuracy against chance (a model that reads the lungs falls to chance);
4. **marker probe**: text markers stamped outside the lungs at every corner and two sizes: how
   often the prediction flips, and how much its probability moves.

Each figure comes with its 95% interval, overall, per source and per class
(:mod:`tea_med.audit.metrics`). Images are processed in chunks (swap partners are drawn within a
chunk), so memory does not grow with the data set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tea_med.audit.metrics import summarise
from tea_med.audit.probes import CORNERS, remove_lungs, shuffled_partners, stamp_markers, swap_background

#: the marker probe's texts (a laterality letter and a burned-in word)
MARKER_TEXTS = ("L", "PORTABLE")
#: the marker probe's heights, as fractions of the image side
MARKER_HEIGHTS = (0.06, 0.10)
#: the metrics ``--fail-above`` can gate on, and where each lives in an audit's summary
GATE_METRICS = {
    "background_share": ("background_share", "share"),
    "swap_flip_rate": ("swap", "flip_rate"),
    "swap_following_rate": ("swap", "following_rate"),
    "lungs_removed_confidence": ("lungs_removed", "confidence"),
    "lungs_removed_accuracy": ("lungs_removed", "accuracy"),
    "marker_flip_rate": ("markers", "flip_rate"),
}


@dataclass
class AuditSettings:
    """What the audit does; the defaults suit 64-224 px images."""

    split: str = "test_unbiased"
    seed: int = 0
    #: images per chunk (swap partners come from the same chunk)
    batch: int = 32
    #: LRP-ε of the relevance probe (``None``: each model's own, else 0.01)
    eps: float | None = None
    blend: int = 2
    marker_texts: tuple[str, ...] = MARKER_TEXTS
    marker_heights: tuple[float, ...] = MARKER_HEIGHTS
    #: swapped and stamped examples kept for the report's figures
    examples: int = 6


@dataclass
class AuditData:
    """A split as the audit reads it, in chunks."""

    manifest: Path
    split: str
    image_size: int
    class_names: list[str]
    #: where masks come from: ``"manifest"`` or a callable ``x -> [B, 1, H, W]`` mask
    masks: Any = "manifest"
    batch: int = 32
    #: audit at most this many images (the split's first ones); ``None``: all
    limit: int | None = None

    def chunks(self) -> Iterator[dict[str, Any]]:
        from monai.data import DataLoader
        from monai.utils import convert_to_tensor

        from tea_med.data import test_transforms, xray_dataset

        from_manifest = isinstance(self.masks, str)
        transform = test_transforms(self.image_size, mask_key="mask" if from_manifest else None)
        ds = xray_dataset(
            self.manifest,
            self.split,
            transform,
            labels=self.class_names,
            require_mask=from_manifest,
        )
        seen = 0
        for batch in DataLoader(ds, batch_size=self.batch, shuffle=False, num_workers=0):
            if self.limit is not None and seen >= self.limit:
                return
            take = len(batch["image"]) if self.limit is None else min(len(batch["image"]), self.limit - seen)
            seen += take
            names = [Path(str(f)).stem for f in batch["image"].meta["filename_or_obj"]][:take]
            batch = {k: v[:take] for k, v in batch.items()}
            x = convert_to_tensor(batch["image"], track_meta=False).float()
            if from_manifest:
                mask = (convert_to_tensor(batch["mask"], track_meta=False).float() > 0.5).float()
            else:
                mask = self.masks(x)
            n = x.shape[0]
            label = batch.get("label")
            yield {
                "image": x,
                "mask": mask,
                "label": None
                if label is None
                else convert_to_tensor(label, track_meta=False).long().reshape(-1),
                "source": [str(s) for s in batch.get("source", ["unknown"] * n)],
                "name": names,
            }


def _probs(model: nn.Module, x: torch.Tensor, seed: int) -> np.ndarray:
    """Softmax of ``model(x)``; a teacher's background noise drawn from ``seed`` (forked RNG)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return torch.softmax(model(x), 1).numpy()


@dataclass
class _Collected:
    """Per-image values of one model, gathered over the chunks."""

    sources: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    share: list[float] = field(default_factory=list)
    refused: str | None = None
    labelled: bool = True
    swap_flip: list[bool] = field(default_factory=list)
    swap_delta: list[float] = field(default_factory=list)
    swap_follow: list[bool] = field(default_factory=list)
    swap_follow_defined: list[bool] = field(default_factory=list)
    swap_pairs: list[tuple[str, str, bool]] = field(default_factory=list)
    removed_conf: list[float] = field(default_factory=list)
    removed_correct: list[bool] = field(default_factory=list)
    removed_kept: list[bool] = field(default_factory=list)
    marker_flip: list[bool] = field(default_factory=list)
    marker_delta: list[float] = field(default_factory=list)
    marker_sources: list[str] = field(default_factory=list)
    marker_classes: list[str] = field(default_factory=list)
    marker_kind: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: (image, LRP-ε heatmap) of the first images, for the report
    heatmaps: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _relevance_share(
    model: nn.Module, x: torch.Tensor, mask: torch.Tensor, eps: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The share of positive relevance outside the lungs per image, and the heatmaps."""
    from tea_med.evaluation.relevance import background_relevance_share
    from tea_med.evaluation.report import explain_predictions

    _, heat = explain_predictions(model, x, eps=eps, seed=seed)
    return background_relevance_share(heat, mask.numpy()), heat


def _audit_chunk(
    model: nn.Module,
    chunk: dict[str, Any],
    class_names: Sequence[str],
    s: AuditSettings,
    eps: float,
    rng: np.random.Generator,
    gen: torch.Generator,
    got: _Collected,
) -> None:
    from tea_med.explain import LRPUnsupportedError

    x, mask, labels, sources = chunk["image"], chunk["mask"], chunk["label"], chunk["source"]
    n, size = x.shape[0], x.shape[-1]
    p = _probs(model, x, s.seed)
    pred = p.argmax(1)
    y = None if labels is None else labels.numpy()
    got.labelled = got.labelled and y is not None
    names = [class_names[int(c)] for c in (pred if y is None else y)]
    got.sources += sources
    got.classes += names
    got.correct += [bool(v) for v in ((pred == y) if y is not None else np.zeros(n, bool))]
    rows = np.arange(n)
    if got.refused is None:
        try:
            share, heat = _relevance_share(model, x, mask, eps, s.seed)
            got.share += share.tolist()
            if not got.heatmaps:  # the first chunk's: the images the report shows
                got.heatmaps = [(x[i, 0].numpy(), heat[i]) for i in range(min(n, s.examples))]
        except LRPUnsupportedError as err:
            got.refused = str(err)
    # background swap: partners from other sources within the chunk
    if n >= 2:
        partner = shuffled_partners(sources, rng)
        swapped = swap_background(x, mask, x[partner], mask[partner], blend=s.blend)
        ps = _probs(model, swapped, s.seed)
        donor = pred[partner] if y is None else y[partner]
        own = pred if y is None else y
        got.swap_flip += (ps.argmax(1) != pred).tolist()
        got.swap_delta += np.abs(ps[rows, pred] - p[rows, pred]).tolist()
        # following: the swap moved the prediction to the donor's class
        got.swap_follow += ((ps.argmax(1) == donor) & (ps.argmax(1) != pred)).tolist()
        got.swap_follow_defined += (donor != own).tolist()
        got.swap_pairs += [
            (sources[i], sources[int(partner[i])], bool(ps[i].argmax() != pred[i])) for i in range(n)
        ]
        for i in range(min(n, s.examples - len(got.examples))):
            got.examples.append(
                {
                    "original": x[i, 0].numpy(),
                    "donor": x[int(partner[i]), 0].numpy(),
                    "swapped": swapped[i, 0].numpy(),
                    "before": f"{class_names[int(pred[i])]} {p[i, pred[i]]:.2f}",
                    "after": f"{class_names[int(ps[i].argmax())]} {ps[i].max():.2f}",
                    "sources": f"{sources[i]} on {sources[int(partner[i])]}",
                }
            )
    removed = remove_lungs(x, mask, gen)
    pr = _probs(model, removed, s.seed)
    got.removed_conf += pr.max(1).tolist()
    got.removed_kept += (pr.argmax(1) == pred).tolist()
    if y is not None:
        got.removed_correct += (pr.argmax(1) == y).tolist()
    for text in s.marker_texts:
        for frac in s.marker_heights:
            height = max(6, round(frac * size))
            for corner in CORNERS:
                stamped, placed = stamp_markers(x, mask, text, corner, height)
                keep = placed.numpy()
                if not keep.any():
                    continue
                pm = _probs(model, stamped[placed], s.seed)
                kept_pred = pred[keep]
                got.marker_flip += (pm.argmax(1) != kept_pred).tolist()
                got.marker_delta += np.abs(
                    pm[np.arange(len(kept_pred)), kept_pred] - p[keep, kept_pred]
                ).tolist()
                got.marker_sources += [sources[i] for i in np.flatnonzero(keep)]
                got.marker_classes += [names[i] for i in np.flatnonzero(keep)]
                got.marker_kind += [f"{text}@{corner}/{round(100 * frac)}%"] * int(keep.sum())


def _swap_matrix(pairs: list[tuple[str, str, bool]]) -> dict[str, Any]:
    sources = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    idx = {s: i for i, s in enumerate(sources)}
    flips = np.zeros((len(sources), len(sources)))
    counts = np.zeros_like(flips)
    for a, b, flipped in pairs:
        counts[idx[a], idx[b]] += 1
        flips[idx[a], idx[b]] += flipped
    rate = np.divide(flips, counts, out=np.full_like(flips, np.nan), where=counts > 0)
    return {
        "sources": sources,
        "flip_rate": [[None if np.isnan(v) else float(v) for v in row] for row in rate],
        "n": counts.astype(int).tolist(),
    }


def audit_model(
    model: nn.Module, data: AuditData, settings: AuditSettings | None = None, eps: float | None = None
) -> dict[str, Any]:
    """Every probe on ``model`` over ``data``; a JSON-friendly summary (``examples`` and
    ``heatmaps`` hold arrays for the report's figures and are left out of ``audit.json``)."""
    s = settings or AuditSettings()
    model.eval()
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    eps_used = s.eps if s.eps is not None else (eps if eps is not None else 0.01)
    got = _Collected()
    for chunk in data.chunks():
        _audit_chunk(model, chunk, data.class_names, s, eps_used, rng, gen, got)
    if not got.sources:
        raise ValueError(f"split {data.split!r} of {data.manifest} holds no images")
    k = len(data.class_names)
    src, cls = got.sources, got.classes
    follow_src = [a for a, _, _ in got.swap_pairs]
    summary: dict[str, Any] = {
        "n_images": len(src),
        "class_names": list(data.class_names),
        "sources": sorted(set(src)),
        "chance": 1.0 / k,
        "eps": eps_used,
        "accuracy": summarise(np.asarray(got.correct), src, cls, "rate") if got.labelled else None,
        "background_share": (
            {"refused": got.refused}
            if got.refused is not None
            else {"share": summarise(np.asarray(got.share), src, cls, "mean", seed=s.seed)}
        ),
        "swap": {
            "flip_rate": summarise(np.asarray(got.swap_flip), follow_src, cls, "rate"),
            "mean_abs_delta": summarise(np.asarray(got.swap_delta), follow_src, cls, "mean", seed=s.seed),
            "following_rate": summarise(
                np.asarray(got.swap_follow),
                follow_src,
                cls,
                "rate",
                where=np.asarray(got.swap_follow_defined),
            ),
            "matrix": _swap_matrix(got.swap_pairs),
        },
        "lungs_removed": {
            "confidence": summarise(np.asarray(got.removed_conf), src, cls, "mean", seed=s.seed),
            "kept_rate": summarise(np.asarray(got.removed_kept), src, cls, "rate"),
            "accuracy": (
                summarise(np.asarray(got.removed_correct), src, cls, "rate") if got.removed_correct else None
            ),
        },
        "markers": {
            "flip_rate": summarise(
                np.asarray(got.marker_flip), got.marker_sources, got.marker_classes, "rate"
            ),
            "mean_abs_delta": summarise(
                np.asarray(got.marker_delta), got.marker_sources, got.marker_classes, "mean", seed=s.seed
            ),
            "by_marker": {
                kind: summarise(
                    np.asarray(got.marker_flip)[np.asarray(got.marker_kind) == kind],
                    [kind] * int(np.count_nonzero(np.asarray(got.marker_kind) == kind)),
                    None,
                    "rate",
                )["overall"]
                for kind in dict.fromkeys(got.marker_kind)
            },
        },
        "examples": got.examples,
        "heatmaps": got.heatmaps,
    }
    return summary


def gate_value(summary: Mapping[str, Any], metric: str) -> float | None:
    """The overall estimate of a ``--fail-above`` metric (``None`` when the audit has none)."""
    if metric not in GATE_METRICS:
        raise ValueError(f"--fail-above: unknown metric {metric!r}; choose from {', '.join(GATE_METRICS)}")
    section, key = GATE_METRICS[metric]
    part = summary.get(section) or {}
    if key not in part or part[key] is None:
        return None
    value = part[key]["overall"]["estimate"]
    return None if value is None else float(value)


__all__ = ["GATE_METRICS", "AuditData", "AuditSettings", "audit_model", "gate_value"]
