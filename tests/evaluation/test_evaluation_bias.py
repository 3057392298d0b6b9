"""Balanced accuracy (against scikit-learn and by hand) and the generalisation gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from tea_med.evaluation import BiasReport, balanced_accuracy, bias_gaps, bias_report, bias_table


def test_balanced_accuracy_hand_computed() -> None:
    # per-class recall 3/4, 2/3, 1/2 -> (9 + 8 + 6) / 36 = 23/36
    y = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    p = [0, 0, 0, 2, 1, 1, 2, 0, 2]
    assert balanced_accuracy(y, p) == pytest.approx(23 / 36)
    assert balanced_accuracy(y, p, n_classes=5) == pytest.approx(23 / 36)  # absent classes do not count


@pytest.mark.parametrize("seed", range(4))
def test_balanced_accuracy_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 2 + seed
    y = rng.integers(0, k, 150)
    p = np.where(rng.random(150) < 0.5, y, rng.integers(0, k, 150))
    assert balanced_accuracy(y, p, n_classes=k) == pytest.approx(balanced_accuracy_score(y, p))
    assert balanced_accuracy(torch.from_numpy(y), torch.from_numpy(p)) == pytest.approx(
        balanced_accuracy_score(y, p)
    )


def test_balanced_accuracy_class_only_predicted_is_ignored_like_sklearn() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 2, 1, 1])  # class 2 never true
    with pytest.warns(UserWarning):
        ref = balanced_accuracy_score(y, p)
    assert balanced_accuracy(y, p) == pytest.approx(ref) == pytest.approx(0.75)


def test_balanced_accuracy_errors() -> None:
    with pytest.raises(ValueError, match=r"y_pred holds label 3, outside 0\.\.2 \(n_classes = 3\)"):
        balanced_accuracy([0, 1, 2], [0, 1, 3], n_classes=3)
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred has 2"):
        balanced_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="y_true is empty"):
        balanced_accuracy([], [])


def test_bias_gaps_is_abs_biased_minus_deceiving() -> None:
    r = bias_gaps(0.95, 0.80, 0.55)
    assert isinstance(r, BiasReport)
    assert r.gap == pytest.approx(0.40)
    assert bias_gaps(0.60, None, 0.70).gap == pytest.approx(0.10)  # absolute value; unbiased optional
    assert r.to_dict() == {"acc_biased": 0.95, "acc_unbiased": 0.80, "acc_deceiving": 0.55, "gap": r.gap}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((95.0, 0.8, 0.5), r"acc_biased must be an accuracy in \[0, 1\] \(not percent\); got 95\.0"),
        ((0.9, float("nan"), 0.5), r"acc_unbiased must be an accuracy in \[0, 1\].*nan"),
        ((0.9, 0.8, "x"), r"acc_deceiving must be an accuracy in \[0, 1\]; got 'x'"),
        ((0.9, 0.8, None), r"acc_deceiving must be an accuracy"),
    ],
)
def test_bias_gaps_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bias_gaps(*args)


def test_bias_report_from_predictions() -> None:
    y = np.array([0, 0, 1, 1])
    preds = {
        "test_biased": (y, np.array([0, 0, 1, 1])),  # 1.0
        "test_unbiased": (y, np.array([0, 1, 1, 1])),  # (1/2 + 1) / 2 = 0.75
        "test_deceiving": (y, np.array([1, 1, 1, 0])),  # (0 + 1/2) / 2 = 0.25
    }
    r = bias_report(preds, n_classes=2)
    assert (r.acc_biased, r.acc_unbiased, r.acc_deceiving, r.gap) == pytest.approx((1.0, 0.75, 0.25, 0.75))
    del preds["test_unbiased"]
    assert bias_report(preds).acc_unbiased is None
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['val'\]"):
        bias_report({**preds, "val": (y, y)})
    with pytest.raises(ValueError, match=r"lacks split\(s\) \['test_deceiving'\]"):
        bias_report({"test_biased": (y, y)})
    with pytest.raises(ValueError, match=r"predictions\['test_biased'\] must be a pair"):
        bias_report({"test_biased": y, "test_deceiving": (y, y)})


def test_bias_table() -> None:
    reports = {"standard": bias_gaps(0.99, None, 0.40), "<student>": bias_gaps(0.9, 0.88, 0.86)}
    md = bias_table(reports)
    assert "| standard | 0.990 | n/a | 0.400 | 0.590 |" in md
    html = bias_table(reports, html_table=True)
    assert "&lt;student&gt;" in html and html.count("<tr>") == 3
