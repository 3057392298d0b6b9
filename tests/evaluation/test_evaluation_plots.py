"""ROC curves and confusion matrices: real, non-blank PNGs at the returned path; bad inputs refused."""

from __future__ import annotations

import math

import matplotlib.figure
import numpy as np
import pytest
from PIL import Image
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from tea_med.evaluation import confusion_matrix_plot, roc_curves


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[matplotlib.figure.Figure]:
    """Every matplotlib figure saved during the test, so its drawn data can be read back."""
    saved: list[matplotlib.figure.Figure] = []
    original = matplotlib.figure.Figure.savefig

    def keep(fig: matplotlib.figure.Figure, *args, **kwargs):
        saved.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return saved


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


def test_roc_curve_hand_computed(tmp_path, figures) -> None:
    """Class 1 scores 0.1, 0.6 (negatives) and 0.4, 0.9 (positives): thresholds 0.9, 0.6, 0.4, 0.1
    give the points (0, 0), (0, 1/2), (1/2, 1/2), (1/2, 1), (1, 1); AUC = 3/4 (3 of 4 pairs ordered).
    Class 0 (scores 1 - s) is the same curve. DeLong: V10 = (1/2, 1), V01 = (1, 1/2), both sample
    variances 1/8, Var = 1/16 + 1/16 = 1/8, interval 0.75 ± 1.96 sqrt(1/8) = [0.057, 1 (clipped)]."""
    y = np.array([0, 0, 1, 1])
    s1 = np.array([0.1, 0.6, 0.4, 0.9])
    roc_curves(y, np.stack([1 - s1, s1], 1), ["no", "yes"], tmp_path / "roc.png")
    (fig,) = figures
    ax = fig.axes[0]
    chance, *curves = ax.lines
    np.testing.assert_array_equal(chance.get_xdata(), [0, 1])
    np.testing.assert_array_equal(chance.get_ydata(), [0, 1])
    assert [c.get_label() for c in curves] == [f"{n}: AUC 0.750 [0.057, 1.000]" for n in ("no", "yes")]
    for c in curves:
        np.testing.assert_allclose(c.get_xdata(), [0, 0, 0.5, 0.5, 1])
        np.testing.assert_allclose(c.get_ydata(), [0, 0.5, 0.5, 1, 1])
    assert "macro AUC 0.750" in ax.get_title() and "N=4" in ax.get_title()
    assert 0.75 - stats.norm.ppf(0.975) * math.sqrt(1 / 8) == pytest.approx(0.0570, abs=1e-4)


def test_roc_curves_png(tmp_path, figures) -> None:
    y, s = _data()
    names = ["normal", "pneumonia", "COVID-19"]
    path = roc_curves(y, s, names, tmp_path / "figs" / "roc.png", title="t")
    assert path == tmp_path / "figs" / "roc.png"
    _check_png(path)
    ax = figures[0].axes[0]
    curves = ax.lines[1:]
    assert len(curves) == 3
    for k, (name, line) in enumerate(zip(names, curves, strict=True)):
        fpr, tpr, _ = roc_curve(y == k, s[:, k])
        np.testing.assert_allclose(line.get_xdata(), fpr)
        np.testing.assert_allclose(line.get_ydata(), tpr)
        assert line.get_label().startswith(f"{name}: AUC {roc_auc_score(y == k, s[:, k]):.3f} [")
    macro = roc_auc_score(y, s, multi_class="ovr", average="macro")
    assert ax.get_title().startswith(f"t\nmacro AUC {macro:.3f}")


def test_roc_curves_class_without_positives_does_not_crash(tmp_path, figures) -> None:
    y, s = _data()
    y = np.where(y == 2, 0, y)
    _check_png(roc_curves(y, s, ["a", "b", "c"], tmp_path / "roc.png"))
    curves = figures[0].axes[0].lines[1:]
    assert curves[2].get_label() == "c: no AUC (one class only)" and len(curves[2].get_xdata()) == 0
    fpr, tpr, _ = roc_curve(y == 1, s[:, 1])
    np.testing.assert_allclose(curves[1].get_xdata(), fpr)
    np.testing.assert_allclose(curves[1].get_ydata(), tpr)


def test_confusion_matrix_plot_hand_computed(tmp_path, figures) -> None:
    """True 0,0,0,1,1,1 predicted 0,1,2,1,1,0: counts [[1, 1, 1], [1, 2, 0], [0, 0, 0]], row shares
    [[1/3, 1/3, 1/3], [1/3, 2/3, 0], [0, 0, 0]] (an empty row is 0, not NaN)."""
    names = ["normal", "pneumonia", "COVID-19"]
    path = confusion_matrix_plot([0, 0, 0, 1, 1, 1], [0, 1, 2, 1, 1, 0], names, tmp_path / "cm.png")
    assert path == tmp_path / "cm.png"
    _check_png(path)
    ax = figures[0].axes[0]
    (image,) = ax.images
    np.testing.assert_allclose(image.get_array(), [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 0], [0, 0, 0]])
    assert image.get_clim() == (0, 1)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}  # (row, col)
    text = {rc: t.get_text() for rc, t in cells.items()}
    assert text == {
        (0, 0): "1\n33.3%", (0, 1): "1\n33.3%", (0, 2): "1\n33.3%",
        (1, 0): "1\n33.3%", (1, 1): "2\n66.7%", (1, 2): "0\n0.0%",
        (2, 0): "0\n0.0%", (2, 1): "0\n0.0%", (2, 2): "0\n0.0%",
    }  # fmt: skip
    assert [t.get_text() for t in ax.get_yticklabels()] == names  # rows: true class
    assert [t.get_text() for t in ax.get_xticklabels()] == names  # columns: predicted class
    assert "N=6" in ax.get_title()


def test_plots_refuse_bad_inputs(tmp_path) -> None:
    y, s = _data()
    with pytest.raises(ValueError, match="class_names has 2 names but scores has 3 classes"):
        roc_curves(y, s, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="scores has 119 rows but y_true has 120"):
        roc_curves(y, s[1:], ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"y_true holds label 2, outside 0\.\.1"):
        confusion_matrix_plot(y, s.argmax(1), ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
