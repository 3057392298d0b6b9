"""ROC curves and confusion matrices as PNGs a person can read (matplotlib figures without pyplot)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tea_med.evaluation.intervals import (
    UndefinedMetricWarning,
    _check_labels,
    _check_scores,
    confusion_matrix,
    delong_ovr,
)

__all__ = ["confusion_matrix_plot", "roc_curves"]


def _names(class_names: Sequence[str], k: int, what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but {what} has {k} classes; they must match")
    return names


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def roc_curves(
    y_true: Any,
    scores: Any,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    level: float = 0.95,
) -> Path:
    """One-vs-rest ROC curve per class, AUC with its DeLong interval in the legend; returns ``path``.

    ``scores`` ``[N, K]`` (probabilities or any per-class scores). A class with no positives or no
    negatives has no curve (its legend entry says so).
    """
    from sklearn.metrics import roc_curve

    y = _check_labels(y_true, "y_true")
    s = _check_scores(scores, y.size)
    names = _names(class_names, s.shape[1], "scores")
    if y.max() >= s.shape[1]:
        raise ValueError(f"y_true holds label {int(y.max())} but scores has {s.shape[1]} columns")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        dl = delong_ovr(y, s, names)
    fig = Figure(figsize=(5.5, 5.0))  # no pyplot: the caller's backend and figures are left alone
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="chance (AUC 0.5)")
    for k, name in enumerate(names):
        if not math.isfinite(dl.auc[k]):
            ax.plot([], [], lw=0, label=f"{name}: no AUC (one class only)")
            continue
        fpr, tpr, _ = roc_curve(y == k, s[:, k])
        iv = dl.interval(k, level)
        ci = "" if math.isnan(iv.low) else f" [{iv.low:.3f}, {iv.high:.3f}]"
        ax.plot(fpr, tpr, lw=2, label=f"{name}: AUC {iv.estimate:.3f}{ci}")
    macro = dl.interval(None, level)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    heading = title or "One-vs-rest ROC curves"
    if math.isfinite(macro.estimate):
        heading += (
            f"\nmacro AUC {macro.estimate:.3f} ({round(level * 100):d}% DeLong CI in legend), N={y.size}"
        )
    ax.set_title(heading, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def confusion_matrix_plot(
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Confusion matrix (rows = true, columns = predicted): counts and row percentages; returns ``path``.

    Colour is the row percentage (the per-class recall on the diagonal), so rare classes read as
    clearly as common ones.
    """
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n_classes=k)
    names = _names(class_names, k, "the confusion matrix")
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    size = 1.2 + 1.1 * k
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * frac[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if frac[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title or f"Confusion matrix (N={int(cm.sum())}; row %)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    return _save(fig, path)
