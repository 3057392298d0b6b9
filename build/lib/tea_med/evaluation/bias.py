"""Resistance to bias: balanced accuracy on biased / unbiased / deceiving test sets and the gap.

docs/method.md, section 8 (paper Sec. 2): a classifier that relies on a bias does well on the **biased** test
set (same bias-class pairing as training) and badly on the **deceiving** one (pairing permuted);
the generalisation gap ``|acc_biased - acc_deceiving|`` measures that reliance (smaller is better).
The **unbiased** set (no bias) is reported when a data set has one.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from tea_med.evaluation.intervals import confusion_matrix

__all__ = ["SPLITS", "BiasReport", "balanced_accuracy", "bias_gaps", "bias_report", "bias_table"]

SPLITS = ("test_biased", "test_unbiased", "test_deceiving")


def balanced_accuracy(y_true: Any, y_pred: Any, n_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true``
    (:func:`sklearn.metrics.balanced_accuracy_score`), after checking the labels: ``n_classes``
    bounds them (``0..n_classes-1``, an error naming the bad label otherwise).
    """
    confusion_matrix(y_true, y_pred, n_classes)  # checks both label arrays, naming a bad label
    t, p = (np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.int64) for a in (y_true, y_pred))
    return float(balanced_accuracy_score(t, p))


def _check_accuracy(value: float | None, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    try:
        v = float(value)  # type: ignore[arg-type]  # None raises TypeError, reported below
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an accuracy in [0, 1]; got {value!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be an accuracy in [0, 1] (not percent); got {value!r}")
    return v


@dataclass(frozen=True)
class BiasReport:
    """Balanced accuracies on the three test sets and the generalisation gap ``|biased - deceiving|``."""

    acc_biased: float
    acc_unbiased: float | None
    acc_deceiving: float
    gap: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            "acc_biased": self.acc_biased,
            "acc_unbiased": self.acc_unbiased,
            "acc_deceiving": self.acc_deceiving,
            "gap": self.gap,
        }


def bias_gaps(acc_biased: float, acc_unbiased: float | None, acc_deceiving: float) -> BiasReport:
    """A :class:`BiasReport` from three accuracies in [0, 1] (``acc_unbiased`` may be ``None``)."""
    b = _check_accuracy(acc_biased, "acc_biased")
    u = _check_accuracy(acc_unbiased, "acc_unbiased", optional=True)
    d = _check_accuracy(acc_deceiving, "acc_deceiving")
    assert b is not None and d is not None
    return BiasReport(acc_biased=b, acc_unbiased=u, acc_deceiving=d, gap=abs(b - d))


def bias_report(predictions: Mapping[str, tuple[Any, Any]], n_classes: int | None = None) -> BiasReport:
    """Balanced accuracies and gap from ``{split: (y_true, y_pred)}``.

    Keys: ``test_biased`` and ``test_deceiving`` (required) and ``test_unbiased`` (optional).
    """
    unknown = sorted(set(predictions) - set(SPLITS))
    if unknown:
        raise ValueError(f"predictions has unknown split(s) {unknown}; allowed: {list(SPLITS)}")
    missing = [s for s in ("test_biased", "test_deceiving") if s not in predictions]
    if missing:
        raise ValueError(f"predictions lacks split(s) {missing}; test_biased and test_deceiving are required")
    acc: dict[str, float | None] = {}
    for split in SPLITS:
        if split not in predictions:
            acc[split] = None
            continue
        pair = predictions[split]
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValueError(
                f"predictions[{split!r}] must be a pair (y_true, y_pred); got {type(pair).__name__}"
            )
        acc[split] = balanced_accuracy(pair[0], pair[1], n_classes)
    # test_biased and test_deceiving are required above, so their accuracies are not None
    return bias_gaps(acc["test_biased"], acc["test_unbiased"], acc["test_deceiving"])  # type: ignore[arg-type]


def bias_table(reports: Mapping[str, BiasReport], *, html_table: bool = False, digits: int = 3) -> str:
    """One row per model (markdown, or a plain HTML ``<table>``): biased, unbiased, deceiving, gap."""
    head = ["model", "biased", "unbiased", "deceiving", "gap"]

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    body = [
        [name, fmt(r.acc_biased), fmt(r.acc_unbiased), fmt(r.acc_deceiving), fmt(r.gap)]
        for name, r in reports.items()
    ]
    if html_table:
        th = "".join(f"<th>{h}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return f'<table class="bias-report"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"
