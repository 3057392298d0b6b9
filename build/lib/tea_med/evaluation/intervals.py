"""Per-class Se, Sp, precision, F1 and one-vs-rest AUC with 95% intervals, and their macro averages.

This is the statistics of the paper's Supp. Note H, computed exactly instead of with MCMC.

**Se / Sp / precision / F1: posterior of the confusion matrix.** The test-set confusion matrix
``n`` (``K × K`` counts; rows = true class, columns = predicted class) is modelled, as in
Zhang, Wang & Zhao (2015, "Estimating the uncertainty of average F1 scores", ICTIR; the model the
paper cites as [56]), as one multinomial draw over the ``K²`` cells with cell probabilities
``θ`` and a Dirichlet prior ``θ ~ Dir(α·1)``. The prior is conjugate, so the posterior is exactly
``Dir(n + α)``: it is sampled directly with a seeded :class:`numpy.random.Generator` (independent
draws, no chains, no burn-in, no convergence to check), which is what the paper's NUTS sampler
approximates. Every rate is a function of ``θ`` (Se_k = θ_kk / Σ_j θ_kj, Sp_k = Σ_{i≠k, j≠k} θ_ij /
Σ_{i≠k} θ_i·, precision_k = θ_kk / Σ_i θ_ik, F1_k = 2θ_kk / (Σ_j θ_kj + Σ_i θ_ik)), so each sample
gives a coherent set of rates, and macro averages are averaged per sample: their intervals carry
the correlation between classes.

Why the full-matrix Dirichlet rather than one Dirichlet per true-class row: per-row posteriors
condition on the class counts, which is exact for Se but leaves the class prevalence (and so
precision and F1) undefined; the full-matrix model carries the prevalence too, so F1 is coherent
with Se and Sp.

**The prior: α = 1/K² per cell by default** (Perks' prior: one pseudo-observation in total, spread
evenly over the K² cells), not the uniform α = 1. Reason, measured (coverage of the true values by
95% intervals over 500-1,500 simulated test sets from known confusion-matrix probabilities; worst
per-class or macro metric): α = 1 adds K² pseudo-observations, i.e. K per true class, which pulls
every Se toward 1/K and F1 toward a low value; the averaged macro intervals are narrow, so the pull
shows. K = 3, n = 60: α = 1 gives 0.82, α = 1/K² 0.91; K = 3, n = 300: 0.92 vs 0.93-0.96;
K = 10 (as COCO-on-Places), n = 900: **0.004** vs 0.92 (macro 0.95); K = 10, n = 200: 0.000 vs 0.90;
Jeffreys' α = 0.5 is fine for K ≤ 3 but fails too at K = 10 (0.35). The induced marginal priors
(aggregation property of the Dirichlet) are Se_k ~ Beta(α, (K-1)α) and Sp_k ~ Beta((K-1)²α, (K-1)α).
``prior_alpha`` overrides it (``1.0`` reproduces the uniform prior of Zhang et al.).

Point estimates are the observed (plug-in) rates, as in scikit-learn; intervals are equal-tailed
posterior quantiles and ``sd`` is the posterior standard deviation (the paper's "± SD"). An observed
rate of exactly 0 or 1 sits at the edge of (and, with a larger ``prior_alpha``, can fall just outside)
its interval, because the posterior never puts mass exactly on the boundary. A rate whose denominator
is empty in the data (Se of a class absent from ``y_true``; precision of a class never predicted)
has estimate and interval NaN, with a warning from :func:`classification_report`. Macro averages use
the classes whose observed value is defined, for the estimate and the posterior samples alike.

**AUC: DeLong.** Per-class one-vs-rest AUC (Mann-Whitney statistic, ties count 1/2, equal to
:func:`sklearn.metrics.roc_auc_score`) with the DeLong, DeLong & Clarke-Pearson (1988, Biometrics
44:837-845) variance, computed by the fast midrank algorithm of Sun & Xu (2014, "Fast
implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393). The one-vs-rest AUCs use
different positive/negative splits of the same cases, so their covariance is computed from each
case's structural components: case ``x`` contributes ``a_k(x) = (V10_k(x) - AUC_k)/√(m_k(m_k-1))``
if it is a positive for class ``k`` (``m_k`` positives) and ``(V01_k(x) - AUC_k)/√(n_k(n_k-1))``
if a negative, and ``Cov(AUC_k, AUC_l) = Σ_x a_k(x) a_l(x)``. The diagonal is exactly DeLong's
``S10/m + S01/n``; when two AUCs share one split (two models, one class) the matrix is exactly
DeLong's covariance; otherwise it is the same influence-function (delta-method) estimate under
i.i.d. sampling of cases, and it is positive semi-definite by construction. The macro AUC is the
mean of the per-class AUCs and its variance is ``wᵀ Σ w`` with ``w = 1/K``. Intervals are Wald
intervals ``AUC ± z·SE`` clipped to [0, 1].

A class with no positives or no negatives in ``y_true`` has no AUC: estimate and interval are NaN
and an :class:`UndefinedMetricWarning` is issued instead of an error; a class with exactly one
positive or one negative has an AUC but no DeLong variance (NaN interval, warning). The macro AUC
averages the classes with a defined AUC; its interval is NaN if one of them has no variance.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata
from sklearn.exceptions import UndefinedMetricWarning as _SklearnUndefinedMetricWarning
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

__all__ = [
    "ClassificationReport",
    "DeLongResult",
    "Interval",
    "MetricRow",
    "UndefinedMetricWarning",
    "classification_report",
    "confusion_matrix",
    "confusion_posterior",
    "confusion_posterior_intervals",
    "default_prior_alpha",
    "delong_ovr",
    "rates_from_confusion",
]

RATE_NAMES = ("se", "sp", "precision", "f1")
_LABELS = {"se": "Se", "sp": "Sp", "precision": "Precision", "f1": "F1", "auc": "AUC"}


class UndefinedMetricWarning(_SklearnUndefinedMetricWarning):
    """A metric or its interval is undefined for these data (e.g. a class with no positives).

    A subclass of scikit-learn's warning of the same name, so its warning filters apply here too."""


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: Any) -> np.ndarray:
    """numpy array from numpy, lists or torch tensors (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_labels(y: Any, name: str, n_classes: int | None = None) -> np.ndarray:
    """Integer class labels ``[N]`` in ``[0, n_classes)``; errors name ``name`` and the bad value."""
    a = _to_numpy(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels; got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty; at least one case is needed")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must hold integer class labels 0..K-1; got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        bad = a[~np.isfinite(a) | (a != np.round(a))] if np.issubdtype(a.dtype, np.floating) else a[:0]
        if bad.size:
            raise ValueError(f"{name} must hold integer class labels 0..K-1; got value {bad[0]!r}")
    a = a.astype(np.int64)
    if a.min() < 0:
        raise ValueError(f"{name} holds label {int(a.min())}; labels must be in 0..K-1")
    if n_classes is not None and a.max() >= n_classes:
        raise ValueError(
            f"{name} holds label {int(a.max())}, outside 0..{n_classes - 1} (n_classes = {n_classes})"
        )
    return a


def _check_scores(scores: Any, n: int) -> np.ndarray:
    """Finite scores ``[N, K]`` with ``K >= 2``."""
    s = _to_numpy(scores)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must have shape [N, K] with K >= 2 classes; got shape {s.shape}")
    if s.shape[0] != n:
        raise ValueError(f"scores has {s.shape[0]} rows but y_true has {n} labels; they must match")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores holds NaN or infinite values; all scores must be finite")
    return s


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


# --------------------------------------------------------------------------- confusion matrix


def default_prior_alpha(n_classes: int) -> float:
    """Default Dirichlet pseudo-count per confusion-matrix cell: ``1/K²`` (one in total)."""
    return 1.0 / n_classes**2


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None) -> np.ndarray:
    """``K × K`` integer counts, rows = true class, columns = predicted class.

    ``n_classes`` defaults to ``max(label) + 1`` over both arrays; labels must be in ``0..K-1``.
    """
    t = _check_labels(y_true, "y_true", n_classes)
    p = _check_labels(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}; they must match")
    k = int(n_classes) if n_classes is not None else int(max(t.max(), p.max())) + 1
    return sklearn_confusion_matrix(t, p, labels=np.arange(k))


def rates_from_confusion(c: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest Se, Sp, precision and F1 per class from counts or cell probabilities.

    ``c`` is ``[..., K, K]`` (rows = true class); returns arrays ``[..., K]`` keyed by
    ``se``/``sp``/``precision``/``f1``. An empty denominator gives NaN (scikit-learn would give 0
    with a warning; NaN keeps "undefined" apart from "zero").
    """
    c = np.asarray(c, dtype=np.float64)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    row = c.sum(-1)  # true class k: TP + FN
    col = c.sum(-2)  # predicted class k: TP + FP
    total = c.sum((-2, -1))[..., None]
    fp = col - tp
    neg = total - row  # TN + FP
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "se": tp / row,
            "sp": (neg - fp) / neg,
            "precision": tp / col,
            "f1": 2 * tp / (row + col),
        }


def confusion_posterior(
    confusion: np.ndarray,
    *,
    n_samples: int = 10_000,
    seed: int | np.random.Generator = 0,
    prior_alpha: float | None = None,
) -> np.ndarray:
    """Independent draws ``[n_samples, K, K]`` of the cell probabilities from ``Dir(n + α)``.

    ``prior_alpha`` is the pseudo-count per cell; ``None`` = ``1/K²`` (module docstring).
    """
    c = np.asarray(confusion)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"confusion must be a square K × K matrix with K >= 2; got shape {c.shape}")
    if (c < 0).any() or not np.all(c == np.round(c)):
        raise ValueError("confusion must hold non-negative integer counts")
    alpha = default_prior_alpha(c.shape[0]) if prior_alpha is None else float(prior_alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"prior_alpha must be a positive number or None (= 1/K²); got {prior_alpha!r}")
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2; got {n_samples!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # Independent exact draws. A zero-count cell with a small α can draw θ = 0 (gamma underflow);
    # that only matters for rates whose observed denominator is empty, which are reported as NaN.
    draws = rng.dirichlet(c.reshape(-1).astype(np.float64) + alpha, size=int(n_samples))
    return draws.reshape(int(n_samples), *c.shape)


# --------------------------------------------------------------------------- result objects


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval and a standard deviation (posterior SD or SE)."""

    estimate: float
    low: float
    high: float
    sd: float

    def to_dict(self) -> dict[str, float | None]:
        """Plain floats; NaN becomes ``None`` (JSON-friendly)."""
        return {k: (None if math.isnan(v) else float(v)) for k, v in vars(self).items()}

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"85.2 [80.1, 89.0]"`` (percent by default); ``"n/a"`` for an undefined estimate."""
        if math.isnan(self.estimate):
            return "n/a"
        est = f"{self.estimate * scale:.{digits}f}"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{est} [n/a]"
        return f"{est} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


_NAN_INTERVAL = Interval(math.nan, math.nan, math.nan, math.nan)


def _interval_from_samples(estimate: float, samples: np.ndarray, level: float) -> Interval:
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi), float(np.std(samples, ddof=1)))


def confusion_posterior_intervals(
    confusion: np.ndarray,
    *,
    level: float = 0.95,
    n_samples: int = 10_000,
    seed: int | np.random.Generator = 0,
    prior_alpha: float | None = None,
) -> dict[str, tuple[list[Interval], Interval]]:
    """Se, Sp, precision, F1 per class and macro, with equal-tailed credible intervals.

    Returns ``{metric: (per_class_intervals, macro_interval)}`` for ``se``, ``sp``, ``precision``
    and ``f1``. Estimates are the observed rates; see the module docstring for the model.
    """
    level = _check_level(level)
    c = np.asarray(confusion)
    post = rates_from_confusion(
        confusion_posterior(c, n_samples=n_samples, seed=seed, prior_alpha=prior_alpha)
    )
    observed = rates_from_confusion(c)
    out: dict[str, tuple[list[Interval], Interval]] = {}
    for name in RATE_NAMES:
        obs, samples = observed[name], post[name]
        defined = np.isfinite(obs)
        per_class = [
            _interval_from_samples(obs[k], samples[:, k], level) if defined[k] else _NAN_INTERVAL
            for k in range(obs.size)
        ]
        if defined.any():
            macro = _interval_from_samples(float(obs[defined].mean()), samples[:, defined].mean(1), level)
        else:
            macro = _NAN_INTERVAL
        out[name] = (per_class, macro)
    return out


# --------------------------------------------------------------------------- DeLong


@dataclass(frozen=True)
class DeLongResult:
    """One-vs-rest AUCs ``[K]`` and their DeLong covariance ``[K, K]`` (NaN where undefined)."""

    auc: np.ndarray
    cov: np.ndarray
    n_pos: np.ndarray
    n_neg: np.ndarray

    def macro(self) -> tuple[float, float]:
        """Mean AUC over classes with a defined AUC, and its variance ``wᵀ Σ w``."""
        ok = np.isfinite(self.auc)
        if not ok.any():
            return math.nan, math.nan
        w = np.full(int(ok.sum()), 1.0 / ok.sum())
        sub = self.cov[np.ix_(ok, ok)]
        return float(self.auc[ok].mean()), float(w @ sub @ w)

    def interval(self, k: int | None, level: float = 0.95) -> Interval:
        """Wald interval ``AUC ± z·SE`` clipped to [0, 1] for class ``k`` (``None`` = macro)."""
        level = _check_level(level)
        if k is None:
            est, var = self.macro()
        else:
            est, var = float(self.auc[k]), float(self.cov[k, k])
        if not (math.isfinite(est) and math.isfinite(var)):
            return Interval(est, math.nan, math.nan, math.nan)
        se = math.sqrt(max(var, 0.0))
        z = float(ndtri((1 + level) / 2))
        return Interval(est, max(0.0, est - z * se), min(1.0, est + z * se), se)


def delong_ovr(y_true: Any, scores: Any, class_names: Sequence[str] | None = None) -> DeLongResult:
    """One-vs-rest AUC per class with the DeLong covariance (fast midrank algorithm, Sun & Xu 2014).

    ``scores`` ``[N, K]``: higher = more class ``k`` (probabilities, logits, any per-class score);
    class ``k``'s AUC ranks column ``k`` for cases of class ``k`` against all others.
    Undefined AUCs / variances are NaN with an :class:`UndefinedMetricWarning` (module docstring).
    """
    y = _check_labels(y_true, "y_true")
    s = _check_scores(scores, y.size)
    n_cases, k_classes = s.shape
    if y.max() >= k_classes:
        raise ValueError(
            f"y_true holds label {int(y.max())} but scores has {k_classes} columns "
            f"(labels 0..{k_classes - 1})"
        )
    names = list(class_names) if class_names is not None else [str(k) for k in range(k_classes)]
    auc = np.full(k_classes, np.nan)
    comps = np.full((n_cases, k_classes), np.nan)  # a_k(x): scaled structural components
    n_pos = np.bincount(y, minlength=k_classes)
    n_neg = n_cases - n_pos
    for k in range(k_classes):
        pos = y == k
        m, n = int(n_pos[k]), int(n_neg[k])
        if m == 0 or n == 0:
            warnings.warn(
                f"class {names[k]!r} has {m} positives and {n} negatives in y_true; its one-vs-rest AUC "
                "is undefined (NaN) and left out of the macro AUC",
                UndefinedMetricWarning,
                stacklevel=2,
            )
            continue
        x, z = s[pos, k], s[~pos, k]
        tz = rankdata(np.concatenate([x, z]))  # midranks (ties averaged)
        tx, ty = rankdata(x), rankdata(z)
        auc[k] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        if m < 2 or n < 2:
            warnings.warn(
                f"class {names[k]!r} has {m} positives and {n} negatives in y_true; DeLong needs at least "
                "2 of each, so its AUC interval is NaN",
                UndefinedMetricWarning,
                stacklevel=2,
            )
            continue
        v10 = (tz[:m] - tx) / n  # share of negatives below each positive (ties 1/2)
        v01 = 1.0 - (tz[m:] - ty) / m  # share of positives above each negative (ties 1/2)
        comps[pos, k] = (v10 - auc[k]) / math.sqrt(m * (m - 1))
        comps[~pos, k] = (v01 - auc[k]) / math.sqrt(n * (n - 1))
    cov = comps.T @ comps
    return DeLongResult(auc=auc, cov=cov, n_pos=n_pos, n_neg=n_neg)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class MetricRow:
    """One table row: a class (or ``"macro"``) with its intervals and its number of true cases."""

    name: str
    support: int
    se: Interval
    sp: Interval
    precision: Interval
    f1: Interval
    auc: Interval

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "support": self.support}
        out.update({m: getattr(self, m).to_dict() for m in (*RATE_NAMES, "auc")})
        return out


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class and macro Se/Sp/precision/F1 (credible intervals) and AUC (DeLong intervals)."""

    rows: tuple[MetricRow, ...]
    macro: MetricRow
    confusion: np.ndarray
    level: float
    n_samples: int
    seed: int
    prior_alpha: float

    @property
    def class_names(self) -> list[str]:
        return [r.name for r in self.rows]

    def row(self, name: str) -> MetricRow:
        """The row of class ``name`` (or ``"macro"``)."""
        for r in (*self.rows, self.macro):
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}; rows are {[*self.class_names, 'macro']}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN -> ``None``)."""
        return {
            "level": self.level,
            "n": int(self.confusion.sum()),
            "n_samples": self.n_samples,
            "seed": self.seed,
            "prior_alpha": self.prior_alpha,
            "confusion_matrix": self.confusion.tolist(),
            "classes": {r.name: r.to_dict() for r in self.rows},
            "macro": self.macro.to_dict(),
        }

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        pct = f"{round(self.level * 100):d}%"
        head = ["class", "N", *[f"{_LABELS[m]} [{pct}]" for m in (*RATE_NAMES, "auc")]]
        body = [
            [r.name, str(r.support), *[getattr(r, m).format() for m in (*RATE_NAMES, "auc")]]
            for r in (*self.rows, self.macro)
        ]
        return head, body

    def _note(self) -> str:
        pct = f"{round(self.level * 100):d}%"
        return (
            f"Percent. Se/Sp/Precision/F1: observed value [{pct} equal-tailed credible interval; "
            f"posterior of the confusion matrix, Dirichlet(α={self.prior_alpha:.3g} per cell) prior, "
            f"{self.n_samples} draws, seed {self.seed}]. AUC: one-vs-rest [{pct} DeLong confidence "
            "interval]. Macro = mean over classes."
        )

    def to_markdown(self) -> str:
        """A GitHub-markdown table (percent), followed by a one-line note on the intervals."""
        head, body = self._cells()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n\n" + self._note() + "\n"

    def to_html(self) -> str:
        """A plain ``<table>`` (percent) with a caption; names are HTML-escaped."""
        head, body = self._cells()
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return (
            f'<table class="classification-report"><caption>{html.escape(self._note())}</caption>'
            f"<thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
        )

    def __str__(self) -> str:
        return self.to_markdown()


def classification_report(
    y_true: Any,
    scores: Any,
    class_names: Sequence[str],
    *,
    seed: int = 0,
    n_samples: int = 10_000,
    level: float = 0.95,
    prior_alpha: float | None = None,
) -> ClassificationReport:
    """Se, Sp, precision, F1 (posterior credible intervals) and one-vs-rest AUC (DeLong) per class.

    Args:
        y_true: true labels ``[N]`` in ``0..K-1`` (numpy, list or torch).
        scores: class probabilities ``[N, K]`` (any per-class scores work); predictions are the argmax.
        class_names: ``K`` distinct names, in label order.
        seed: seed of the posterior sampler (same seed, same intervals).
        n_samples: posterior draws (10,000 gives Monte Carlo error on the 2.5% quantile ≈ 0.1-0.3
            points of percent at typical test-set sizes).
        level: interval probability.
        prior_alpha: Dirichlet pseudo-count per confusion-matrix cell; ``None`` = ``1/K²`` (one
            pseudo-observation in total; see the module docstring for why not the uniform ``1``).

    Warns :class:`UndefinedMetricWarning` for undefined rates or AUCs (a class absent from
    ``y_true``, or present in every case); those cells are NaN instead of raising.
    """
    y = _check_labels(y_true, "y_true")
    s = _check_scores(scores, y.size)
    k = s.shape[1]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but scores has {k} columns; they must match")
    if len(set(names)) != k:
        raise ValueError(f"class_names must be distinct; got {names}")
    if "macro" in names:
        raise ValueError("class_names may not contain 'macro' (the name of the average row)")
    if y.max() >= k:
        raise ValueError(f"y_true holds label {int(y.max())} but there are {k} classes (labels 0..{k - 1})")
    level = _check_level(level)
    cm = confusion_matrix(y, s.argmax(1), n_classes=k)
    rates = confusion_posterior_intervals(
        cm, level=level, n_samples=n_samples, seed=seed, prior_alpha=prior_alpha
    )
    observed = rates_from_confusion(cm)
    for m in RATE_NAMES:
        undefined = [names[i] for i in np.flatnonzero(~np.isfinite(observed[m]))]
        if undefined:
            warnings.warn(
                f"{_LABELS[m]} is undefined (empty denominator) for classes {undefined}; their "
                "estimate is NaN and they are left out of the macro average",
                UndefinedMetricWarning,
                stacklevel=2,
            )
    dl = delong_ovr(y, s, names)
    support = cm.sum(1)
    rows = tuple(
        MetricRow(
            name=names[i],
            support=int(support[i]),
            **{m: rates[m][0][i] for m in RATE_NAMES},
            auc=dl.interval(i, level),
        )
        for i in range(k)
    )
    macro = MetricRow(
        name="macro",
        support=int(support.sum()),
        **{m: rates[m][1] for m in RATE_NAMES},
        auc=dl.interval(None, level),
    )
    return ClassificationReport(
        rows=rows,
        macro=macro,
        confusion=cm,
        level=level,
        n_samples=int(n_samples),
        seed=int(seed),
        prior_alpha=default_prior_alpha(k) if prior_alpha is None else float(prior_alpha),
    )
