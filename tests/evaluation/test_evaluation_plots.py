"""ROC curves and confusion matrices: real, non-blank PNGs at the returned path; bad inputs refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tea_med.evaluation import confusion_matrix_plot, roc_curves


def _check_png(path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        grey = np.asarray(im.convert("L"))
    assert w >= 400 and h >= 400
    assert len(np.unique(grey)) > 20  # text, lines and colour, not a blank canvas


def _data(seed: int = 0, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 3))
    z[np.arange(n), y] += 1.5
    return y, np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_roc_curves_png(tmp_path) -> None:
    y, s = _data()
    path = roc_curves(y, s, ["normal", "pneumonia", "COVID-19"], tmp_path / "figs" / "roc.png", title="t")
    assert path == tmp_path / "figs" / "roc.png"
    _check_png(path)


def test_roc_curves_class_without_positives_does_not_crash(tmp_path) -> None:
    y, s = _data()
    y = np.where(y == 2, 0, y)
    _check_png(roc_curves(y, s, ["a", "b", "c"], tmp_path / "roc.png"))


def test_confusion_matrix_plot_png(tmp_path) -> None:
    y, s = _data(1)
    path = confusion_matrix_plot(y, s.argmax(1), ["normal", "pneumonia", "COVID-19"], tmp_path / "cm.png")
    assert path == tmp_path / "cm.png"
    _check_png(path)


def test_plots_refuse_bad_inputs(tmp_path) -> None:
    y, s = _data()
    with pytest.raises(ValueError, match="class_names has 2 names but scores has 3 classes"):
        roc_curves(y, s, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="scores has 119 rows but y_true has 120"):
        roc_curves(y, s[1:], ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"y_true holds label 2, outside 0\.\.1"):
        confusion_matrix_plot(y, s.argmax(1), ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
