"""Evaluate classifiers on the three bias test sets, with intervals, heatmaps and an HTML page.

:func:`evaluate_on_bias_splits` runs every model on ``test_biased`` / ``test_unbiased`` /
``test_deceiving`` of one datalist (docs/method.md, section 8): balanced accuracy and the
generalisation gap (:func:`~tea_med.evaluation.bias_report`), per-class Se/Sp/F1 and AUC with
95% intervals on ``test_unbiased`` (:func:`~tea_med.evaluation.classification_report`), the share
of positive LRP-ε relevance outside the lungs, ROC curves, confusion matrices and a grid of
heatmaps on ``test_deceiving``. A :class:`~tea_med.networks.TeacherPipeline` is explained the way
TEA explains it: through its classifier, on its masked input.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tea_med.evaluation.bias import SPLITS, BiasReport, bias_report
from tea_med.evaluation.figures import heatmap_grid
from tea_med.evaluation.intervals import ClassificationReport, Interval, classification_report
from tea_med.evaluation.plots import confusion_matrix_plot, roc_curves
from tea_med.evaluation.relevance import background_relevance_share

#: images of ``test_deceiving`` shown in the heatmap grid
GRID_IMAGES = 6


@dataclass
class BiasEvaluation:
    """What :func:`evaluate_on_bias_splits` measured, per model name."""

    bias: dict[str, BiasReport]
    reports: dict[str, ClassificationReport]
    background: dict[str, dict[str, float]]
    figures: dict[str, Path] = field(default_factory=dict)
    #: per model and test split: balanced accuracy (the macro sensitivity) with its 95% interval
    accuracy: dict[str, dict[str, Interval]] = field(default_factory=dict)

    def rows(self) -> dict[str, dict[str, float]]:
        """One flat row of numbers per model (for tables, JSON and MLflow metrics)."""
        out: dict[str, dict[str, float]] = {}
        for name, b in self.bias.items():
            auc = self.reports[name].macro.auc
            row = {f"acc_{split}": getattr(b, f"acc_{split.removeprefix('test_')}") for split in SPLITS}
            for split, interval in self.accuracy.get(name, {}).items():
                row |= {f"acc_{split}_low": interval.low, f"acc_{split}_high": interval.high}
            row |= {"gap": b.gap, "auc_unbiased": auc.estimate, "auc_low": auc.low, "auc_high": auc.high}
            row |= {f"background_{split}": v for split, v in self.background[name].items()}
            out[name] = {k: float("nan") if v is None else float(v) for k, v in row.items()}
        return out


def _load_split(manifest: Path, split: str, size: int, labels: Sequence[str]) -> dict[str, Any]:
    from monai.data import DataLoader
    from monai.utils import convert_to_tensor

    from tea_med.data import test_transforms, xray_dataset

    ds = xray_dataset(manifest, split, test_transforms(size, mask_key="mask"), labels=list(labels))
    batch = next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False, num_workers=0)))
    names = [Path(str(f)).stem for f in batch["image"].meta["filename_or_obj"]]
    return {
        "image": convert_to_tensor(batch["image"], track_meta=False).float(),
        "mask": convert_to_tensor(batch["mask"], track_meta=False).float(),
        "label": convert_to_tensor(batch["label"], track_meta=False).long().reshape(-1),
        "names": names,
    }


def explain_predictions(
    model: nn.Module, x: torch.Tensor, *, eps: float, seed: int, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``[N, K]`` and LRP-ε heatmaps of the predicted class ``[N, C, H, W]``.

    A teacher's background noise is drawn from ``seed`` in a forked RNG (the caller's random
    state is untouched), so a model's evaluation repeats exactly.
    """
    from tea_med.explain import LRPEpsilon
    from tea_med.networks.teacher import explained_input

    lrp = LRPEpsilon(eps=eps)
    probs, heats = [], []
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), chunk):
            with torch.no_grad():
                network, seen, _ = explained_input(model, x[start : start + chunk])
            e = lrp.explain(network, seen, lambda z: z.argmax(1))
            probs.append(torch.softmax(e.logits.detach(), 1).numpy())
            heats.append(e.heatmap.detach().numpy())
    return np.concatenate(probs), np.concatenate(heats)


def evaluate_on_bias_splits(
    models: Mapping[str, nn.Module],
    manifest: str | Path,
    *,
    size: int,
    class_names: Sequence[str],
    eps: float,
    seed: int = 0,
    figures_dir: str | Path | None = None,
) -> BiasEvaluation:
    """Every model on every test split of ``manifest`` (a datalist with ``test_biased``,
    ``test_unbiased``, ``test_deceiving`` and lung masks under ``mask``).

    Args:
        models: name -> classifier or :class:`~tea_med.networks.TeacherPipeline` (eval mode).
        size: the side the images are resized to (the models' training size).
        class_names: the label order of the models' logits.
        eps: LRP-ε of the heatmaps and the background share (use the training run's own ε).
        seed: the teacher's background noise and the posterior draws of the intervals.
        figures_dir: where ROC, confusion-matrix and heatmap PNGs go (none when ``None``).
    """
    manifest = Path(manifest)
    k = len(class_names)
    predictions: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {m: {} for m in models}
    background: dict[str, dict[str, float]] = {m: {} for m in models}
    reports: dict[str, ClassificationReport] = {}
    accuracy: dict[str, dict[str, Interval]] = {m: {} for m in models}
    grid: dict[str, np.ndarray] = {}
    grid_titles: list[str] = []
    figures: dict[str, Path] = {}
    fig_dir = None if figures_dir is None else Path(figures_dir)
    for split in SPLITS:
        data = _load_split(manifest, split, size, class_names)
        y = data["label"].numpy()
        for name, model in models.items():
            probs, heat = explain_predictions(model, data["image"], eps=eps, seed=seed)
            pred = probs.argmax(1)
            predictions[name][split] = (y, pred)
            background[name][split] = float(
                np.nanmean(background_relevance_share(heat, data["mask"].numpy()))
            )
            split_report = classification_report(y, probs, list(class_names), seed=seed)
            accuracy[name][split] = split_report.macro.se  # mean recall = balanced accuracy
            if split == "test_unbiased":
                reports[name] = split_report
                if fig_dir is not None:
                    figures[f"roc_{name}"] = roc_curves(
                        y, probs, list(class_names), fig_dir / f"roc_{name}.png"
                    )
                    figures[f"confusion_{name}"] = confusion_matrix_plot(
                        y, pred, list(class_names), fig_dir / f"confusion_{name}.png"
                    )
            if split == "test_deceiving":
                grid[name] = heat[:GRID_IMAGES]
        if split == "test_deceiving":
            grid_titles = [
                f"{class_names[int(c)]} ({n})"
                for c, n in zip(y[:GRID_IMAGES].tolist(), data["names"][:GRID_IMAGES], strict=True)
            ]
            grid_images = data["image"][:GRID_IMAGES].numpy()
    if fig_dir is not None:
        figures["heatmaps_deceiving"] = heatmap_grid(
            grid_images,
            {f"{m} LRP-ε": grid[m] for m in models},
            fig_dir / "heatmaps_deceiving.png",
            row_titles=grid_titles,
            title="test_deceiving: where each model looks (red = evidence for its prediction)",
        )
    bias = {name: bias_report(predictions[name], n_classes=k) for name in models}
    return BiasEvaluation(
        bias=bias, reports=reports, background=background, figures=figures, accuracy=accuracy
    )


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """The printed table: balanced accuracy per test set, the gap, OOD AUC, background share."""
    head = (
        f"{'model':<9} {'biased':>7} {'unbiased':>9} {'deceiving':>10} {'gap':>6} "
        f"{'AUC (unbiased) [95% CI]':>26} {'bg rel.':>8}"
    )
    lines = [head, "-" * len(head)]
    for m, r in rows.items():
        auc = f"{r['auc_unbiased']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]"
        lines.append(
            f"{m:<9} {r['acc_test_biased']:>7.3f} {r['acc_test_unbiased']:>9.3f} "
            f"{r['acc_test_deceiving']:>10.3f} {r['gap']:>6.3f} {auc:>26} "
            f"{r['background_test_deceiving']:>8.3f}"
        )
    return "\n".join(lines)


def write_report(
    out: str | Path,
    evaluation: BiasEvaluation,
    targets: Mapping[str, bool],
    *,
    title: str = "tea_med: training with explanations alone",
    intro: str = "",
    sections: str = "",
) -> Path:
    """A self-contained ``<out>/report.html`` (figures referenced relative to ``out``); ``sections``
    is HTML placed after the bias table (the demo's audit)."""
    out = Path(out)
    rows = evaluation.rows()

    def img(key: str, alt: str) -> str:
        path = evaluation.figures.get(key)
        if path is None:
            return ""
        src = html.escape(Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix())
        alt = html.escape(alt)
        return f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'

    table = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{r['acc_test_biased']:.3f}</td><td>{r['acc_test_unbiased']:.3f}</td>"
        f"<td>{r['acc_test_deceiving']:.3f}</td><td><b>{r['gap']:.3f}</b></td>"
        f"<td>{r['auc_unbiased']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]</td>"
        f"<td>{r['background_test_deceiving']:.3f}</td></tr>"
        for m, r in rows.items()
    )
    checks = "".join(
        f"<li>{'✅ met' if ok else '❌ NOT met'}: {html.escape(k.replace('_', ' '))}</li>"
        for k, ok in targets.items()
    )
    per_class = "".join(f"<h3>{html.escape(m)}</h3>{r.to_html()}" for m, r in evaluation.reports.items())
    names = list(rows)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:.5em}}img{{max-width:520px}}</style></head><body>
<h1>{html.escape(title)}</h1>{intro}
<h2>Bias</h2><p>Balanced accuracy; gap = |biased − deceiving| (smaller is better); AUC on hospitals never seen
in training (macro, DeLong 95% CI); share of positive relevance outside the lungs on test_deceiving.</p>
<table><tr><th>model</th><th>biased</th><th>unbiased</th><th>deceiving</th><th>gap</th><th>AUC unbiased</th>
<th>background relevance</th></tr>{table}</table><ul>{checks}</ul>
{sections}
{img("heatmaps_deceiving", "LRP-ε heatmaps on test_deceiving (class-hospital pairing permuted)")}
<h2>Out-of-distribution test set (test_unbiased)</h2>
<p>Per-class sensitivity, specificity and F1 with 95% credible intervals (posterior of the confusion matrix);
AUC with DeLong 95% confidence intervals.</p>{per_class}
{"".join(img(f"roc_{m}", f"ROC curves, {m}") for m in names)}
{"".join(img(f"confusion_{m}", f"confusion matrix, {m}") for m in names)}
{"<h2>Data</h2>" + img("examples", "example images per split") if "examples" in evaluation.figures else ""}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["BiasEvaluation", "evaluate_on_bias_splits", "explain_predictions", "format_table", "write_report"]
