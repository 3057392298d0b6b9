"""Se/Sp/precision/F1 credible intervals and DeLong AUC intervals: values, exact posteriors, coverage.

Reference values come from scikit-learn, from small cases written out by hand, from the exact Beta
marginals of the Dirichlet posterior and from a brute-force O(m·n) structural-components
computation; coverage is measured by simulation from known truths.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import precision_recall_fscore_support, recall_score, roc_auc_score

from tea_med.evaluation import (
    ClassificationReport,
    UndefinedMetricWarning,
    classification_report,
    confusion_matrix,
    confusion_posterior,
    confusion_posterior_intervals,
    delong_ovr,
    rates_from_confusion,
)

# Hand-computed case: 9 cases, 3 classes.
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 0, 2, 1, 1, 2, 0, 2])
# confusion (rows true): [[3,0,1],[0,2,1],[1,0,1]]; row sums 4,3,2; column sums 4,2,3
HAND = {
    "se": [3 / 4, 2 / 3, 1 / 2],
    "sp": [4 / 5, 6 / 6, 5 / 7],  # negatives 5,6,7; false positives 1,0,2
    "precision": [3 / 4, 2 / 2, 1 / 3],
    "f1": [6 / 8, 4 / 5, 2 / 5],  # 2TP / (row + column)
}


def _softmax_scores(rng: np.random.Generator, y: np.ndarray, k: int, shift: float) -> np.ndarray:
    z = rng.normal(size=(y.size, k))
    z[np.arange(y.size), y] += shift
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# --------------------------------------------------------------------------- point values


def test_confusion_matrix_and_rates_hand_computed() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, [[3, 0, 1], [0, 2, 1], [1, 0, 1]])
    rates = rates_from_confusion(cm)
    for name, want in HAND.items():
        np.testing.assert_allclose(rates[name], want, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rates_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    rates = rates_from_confusion(confusion_matrix(y, pred, k))
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=np.nan)
    np.testing.assert_allclose(rates["se"], r)
    np.testing.assert_allclose(rates["precision"], p)
    np.testing.assert_allclose(rates["f1"], f)
    sp = [recall_score(y != c, pred != c) for c in range(k)]  # specificity = recall of "not c"
    np.testing.assert_allclose(rates["sp"], sp)


def test_rates_undefined_are_nan_not_zero() -> None:
    cm = np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 absent and never predicted
    rates = rates_from_confusion(cm)
    assert math.isnan(rates["se"][2]) and math.isnan(rates["precision"][2]) and math.isnan(rates["f1"][2])
    assert rates["sp"][2] == 1.0


# --------------------------------------------------------------------------- posterior


@pytest.mark.parametrize("prior_alpha", [1.0, None])
def test_posterior_marginals_are_the_exact_beta_distributions(prior_alpha: float | None) -> None:
    """Dir(n + α) aggregates to Beta marginals: Se_k ~ Beta(n_kk + α, Σ_{j≠k} n_kj + (K-1)α), etc."""
    cm = np.array([[30, 4, 6], [3, 25, 2], [5, 0, 14]])
    k = 3
    alpha = 1 / 9 if prior_alpha is None else prior_alpha  # the default is 1/K²
    res = confusion_posterior_intervals(cm, n_samples=200_000, seed=3, prior_alpha=prior_alpha, level=0.9)
    a = cm + alpha
    for c in range(k):
        off = [j for j in range(k) if j != c]
        exact = {
            "se": stats.beta(a[c, c], a[c, off].sum()),
            "precision": stats.beta(a[c, c], a[off, c].sum()),
            "sp": stats.beta(a[np.ix_(off, off)].sum(), a[off, c].sum()),
        }
        for name, dist in exact.items():
            iv = res[name][0][c]
            assert iv.low == pytest.approx(dist.ppf(0.05), abs=2.5e-3), (name, c)
            assert iv.high == pytest.approx(dist.ppf(0.95), abs=2.5e-3), (name, c)
            assert iv.sd == pytest.approx(dist.std(), rel=0.02), (name, c)
        assert res["se"][0][c].estimate == pytest.approx(cm[c, c] / cm[c].sum())


def test_posterior_is_seeded_and_macro_is_averaged_per_sample() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    a = confusion_posterior_intervals(cm, n_samples=4000, seed=7)
    b = confusion_posterior_intervals(cm, n_samples=4000, seed=7)
    c = confusion_posterior_intervals(cm, n_samples=4000, seed=8)
    assert a == b
    assert a["f1"][1] != c["f1"][1]
    # averaging per sample keeps the macro interval narrower than the mean of the class intervals
    macro = a["f1"][1]
    assert macro.estimate == pytest.approx(np.mean(HAND["f1"]))
    width = macro.high - macro.low
    assert width < np.mean([iv.high - iv.low for iv in a["f1"][0]])


def test_macro_intervals_match_an_independent_posterior() -> None:
    """The macro interval is that of the per-draw mean over classes, from the Dir(n + 1/K²) posterior.

    Reference: Se_k are the rows' Beta marginals, and the normalised rows of a Dirichlet are
    independent, so the macro Se's posterior SD is sqrt(Σ Var Se_k) / K exactly (scipy.stats);
    its quantiles and those of macro F1 come from an independent Monte Carlo in the test:
    Dirichlet draws as normalised gamma variates (not numpy's dirichlet), F1 = 2θ_kk / (row + col).
    """
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)  # [[3, 0, 1], [0, 2, 1], [1, 0, 1]]
    a = cm + 1 / 9
    n = 200_000
    res = confusion_posterior_intervals(cm, n_samples=n, seed=7)

    se_marginals = [stats.beta(a[k, k], a[k].sum() - a[k, k]) for k in range(3)]
    se = res["se"][1]
    assert se.estimate == pytest.approx(np.mean(HAND["se"]))  # the observed rates, not the posterior's
    assert se.sd == pytest.approx(math.sqrt(sum(d.var() for d in se_marginals)) / 3, rel=0.01)
    rng = np.random.default_rng(20240611)
    se_draws = np.mean([d.rvs(size=n, random_state=rng) for d in se_marginals], axis=0)
    assert (se.low, se.high) == pytest.approx(tuple(np.quantile(se_draws, [0.025, 0.975])), abs=5e-3)

    g = rng.gamma(a.reshape(-1), size=(n, 9)).reshape(n, 3, 3)
    theta = g / g.sum((1, 2), keepdims=True)
    diag = np.diagonal(theta, axis1=1, axis2=2)
    f1_draws = (2 * diag / (theta.sum(2) + theta.sum(1))).mean(1)
    f1 = res["f1"][1]
    assert f1.estimate == pytest.approx(np.mean(HAND["f1"]))
    assert (f1.low, f1.high) == pytest.approx(tuple(np.quantile(f1_draws, [0.025, 0.975])), abs=5e-3)
    assert f1.sd == pytest.approx(np.std(f1_draws), rel=0.01)
    # the mean of the class intervals' bounds is clearly not the macro interval (the test can fail)
    assert abs(np.mean([iv.low for iv in res["f1"][0]]) - f1.low) > 0.02


def test_posterior_samples_sum_to_one_and_track_counts() -> None:
    cm = np.array([[400, 100], [50, 450]])
    draws = confusion_posterior(cm, n_samples=5000, seed=0)
    np.testing.assert_allclose(draws.sum((1, 2)), 1.0)
    np.testing.assert_allclose(draws.mean(0), (cm + 0.25) / (cm.sum() + 1), atol=2e-3)  # α = 1/K²


# --------------------------------------------------------------------------- DeLong


def test_delong_hand_computed_binary_case() -> None:
    """Positives 0.9, 0.8, 0.4; negatives 0.7, 0.4, 0.2, 0.1 (one tie).

    V10 = [1, 1, 0.625] -> AUC = 0.875, S10 = 0.046875; V01 = [2/3, 5/6, 1, 1] -> S01 = 44/1728.
    Var = S10/3 + S01/4 = 27/1728 + 11/1728 = 19/864.
    """
    s1 = np.array([0.9, 0.8, 0.4, 0.7, 0.4, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    res = delong_ovr(y, np.stack([1 - s1, s1], 1))
    np.testing.assert_allclose(res.auc, [0.875, 0.875])
    # binary: class 0's positives are class 1's negatives, so all four entries are the same variance
    np.testing.assert_allclose(res.cov, np.full((2, 2), 19 / 864))
    est, var = res.macro()
    assert (est, var) == pytest.approx((0.875, 19 / 864))
    iv = res.interval(1)
    z = stats.norm.ppf(0.975)
    assert (iv.low, iv.high, iv.sd) == pytest.approx(
        (0.875 - z * math.sqrt(19 / 864), 1.0, math.sqrt(19 / 864))
    )


def _brute_force_components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Structural components by explicit pair loops (DeLong 1988 definitions), no ranks."""
    n, k = s.shape
    auc = np.zeros(k)
    a = np.zeros((n, k))
    for c in range(k):
        pos, neg = np.flatnonzero(y == c), np.flatnonzero(y != c)
        psi = np.array(
            [[1.0 if s[i, c] > s[j, c] else 0.5 if s[i, c] == s[j, c] else 0.0 for j in neg] for i in pos]
        )
        auc[c] = psi.mean()
        v10, v01 = psi.mean(1), psi.mean(0)
        m, q = len(pos), len(neg)
        a[pos, c] = (v10 - auc[c]) / math.sqrt(m * (m - 1))
        a[neg, c] = (v01 - auc[c]) / math.sqrt(q * (q - 1))
    return auc, a


def test_delong_matches_brute_force_and_sklearn_with_ties() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 60)
    s = np.round(_softmax_scores(rng, y, 3, 1.0), 1)  # coarse rounding -> many ties
    res = delong_ovr(y, s)
    auc, a = _brute_force_components(y, s)
    np.testing.assert_allclose(res.auc, auc)
    np.testing.assert_allclose(res.auc, [roc_auc_score(y == c, s[:, c]) for c in range(3)])
    np.testing.assert_allclose(res.cov, a.T @ a, atol=1e-15)
    # the diagonal is DeLong's S10/m + S01/n
    for c in range(3):
        pos = y == c
        v10 = np.array(
            [np.mean((s[i, c] > s[~pos, c]) + 0.5 * (s[i, c] == s[~pos, c])) for i in np.flatnonzero(pos)]
        )
        v01 = np.array(
            [np.mean((s[pos, c] > s[j, c]) + 0.5 * (s[pos, c] == s[j, c])) for j in np.flatnonzero(~pos)]
        )
        var = v10.var(ddof=1) / pos.sum() + v01.var(ddof=1) / (~pos).sum()
        assert res.cov[c, c] == pytest.approx(var)
    est, var = res.macro()
    assert est == pytest.approx(np.mean([roc_auc_score(y == c, s[:, c]) for c in range(3)]))
    assert var == pytest.approx(res.cov.mean())
    assert np.linalg.eigvalsh(res.cov).min() > -1e-15


def test_delong_variance_matches_bootstrap_loosely() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 400)
    s = _softmax_scores(rng, y, 3, 1.2)
    res = delong_ovr(y, s)
    boots = []
    for _ in range(300):
        idx = rng.integers(0, y.size, y.size)
        boots.append(roc_auc_score(y[idx], s[idx], multi_class="ovr", average="macro"))
    ratio = res.macro()[1] / np.var(boots, ddof=1)
    assert 0.7 < ratio < 1.4, ratio


# --------------------------------------------------------------------------- coverage by simulation


def test_delong_interval_coverage_by_simulation() -> None:
    """Scores z ~ N(d_y e_y, I): class c's score is N(d_c, 1) in class c and N(0, 1) elsewhere, so the
    true one-vs-rest AUC is Φ(d_c / √2) exactly. 400 data sets of 300 cases; the 95% coverage of the
    true per-class and macro AUCs must lie in [0.91, 0.99] (binomial SE ≈ 0.011 at 0.95), the 80%
    intervals in [0.73, 0.87], and the DeLong macro variance must match the spread over data sets.
    """
    rng = np.random.default_rng(2024)
    d = np.array([1.0, 1.5, 2.0])
    truth = stats.norm.cdf(d / math.sqrt(2))
    truth = np.append(truth, truth.mean())
    reps, n = 400, 300
    hits95 = np.zeros(4)
    hits80 = np.zeros(4)
    macro_auc, macro_var = [], []
    y = np.repeat(np.arange(3), n // 3)
    for _ in range(reps):
        z = rng.normal(size=(n, 3))
        z[np.arange(n), y] += d[y]
        res = delong_ovr(y, z)
        for j, k in enumerate([0, 1, 2, None]):
            i95, i80 = res.interval(k, 0.95), res.interval(k, 0.80)
            hits95[j] += i95.low <= truth[j] <= i95.high
            hits80[j] += i80.low <= truth[j] <= i80.high
        est, var = res.macro()
        macro_auc.append(est)
        macro_var.append(var)
    cov95, cov80 = hits95 / reps, hits80 / reps
    print("DeLong coverage 95%:", cov95, "80%:", cov80)
    assert np.all((cov95 >= 0.91) & (cov95 <= 0.99)), cov95
    assert np.all((cov80 >= 0.73) & (cov80 <= 0.87)), cov80
    ratio = np.mean(macro_var) / np.var(macro_auc, ddof=1)
    print("DeLong macro variance / empirical variance:", ratio)
    assert 0.8 < ratio < 1.25, ratio  # the variance of a 400-sample variance is ≈ 7%


P3 = np.array([[0.25, 0.04, 0.01], [0.03, 0.30, 0.07], [0.02, 0.08, 0.20]])
P10 = np.where(np.eye(10, dtype=bool), 0.7, 0.3 / 9) / 10  # 10 balanced classes, 70% correct


def _posterior_coverage(
    P: np.ndarray, n: int, reps: int, level: float, prior_alpha: float | None = None, seed: int = 99
) -> dict[str, np.ndarray]:
    """Share of ``reps`` simulated test sets whose interval covers the truth, per class + macro."""
    k = P.shape[0]
    truth_rates = rates_from_confusion(P)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, P.ravel(), size=reps).reshape(reps, k, k)
    hits = {m: np.zeros(k + 1) for m in ("se", "sp", "precision", "f1")}
    for r in range(reps):
        res = confusion_posterior_intervals(
            counts[r], n_samples=1000, seed=r, level=level, prior_alpha=prior_alpha
        )
        for m, h in hits.items():
            truth = np.append(truth_rates[m], truth_rates[m].mean())
            per_class, macro = res[m]
            h += [iv.low <= t <= iv.high for iv, t in zip([*per_class, macro], truth, strict=True)]
    return {m: h / reps for m, h in hits.items()}


@pytest.mark.parametrize(
    ("P", "n", "reps", "level", "bounds"),
    [
        (P3, 300, 400, 0.95, (0.90, 0.99)),
        (P3, 300, 400, 0.80, (0.72, 0.88)),
        (P10, 400, 250, 0.95, (0.90, 0.99)),
    ],
    ids=["K3-95%", "K3-80%", "K10-95%"],
)
def test_posterior_interval_coverage_by_simulation(
    P: np.ndarray, n: int, reps: int, level: float, bounds: tuple[float, float]
) -> None:
    """Known confusion-matrix probabilities P; ``reps`` test sets of ``n`` cases ~ Multinomial(n, P);
    the credible intervals (1,000 posterior draws each, default prior) must cover the true Se/Sp/
    precision/F1 of every class and of the macro average (computed from P) at a rate within
    ``bounds``: ±4 binomial SEs around the nominal level at 400 repetitions, so both too narrow and
    too wide intervals fail.
    """
    cov = _posterior_coverage(P, n, reps, level)
    for m, c in cov.items():
        print(f"posterior coverage K={P.shape[0]} {m} {level:.0%}: {np.round(c, 3)}")
        assert np.all((c >= bounds[0]) & (c <= bounds[1])), (m, c)


def test_uniform_prior_undercovers_with_ten_classes() -> None:
    """Why the default prior is 1/K² per cell: the uniform α = 1 adds K pseudo-cases to every class
    and, with 10 classes, its macro intervals miss the truth almost always."""
    uniform = _posterior_coverage(P10, 400, 60, 0.95, prior_alpha=1.0)
    default = _posterior_coverage(P10, 400, 60, 0.95)
    assert uniform["f1"][-1] < 0.2 and uniform["se"][-1] < 0.2
    assert default["f1"][-1] > 0.85 and default["se"][-1] > 0.85


# --------------------------------------------------------------------------- the report


def test_classification_report_values_and_tables() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    s = _softmax_scores(rng, y, 3, 1.5)
    names = ["normal", "pneumonia", "<covid>"]
    rep = classification_report(y, s, names, seed=1, n_samples=2000)
    assert isinstance(rep, ClassificationReport)
    pred = s.argmax(1)
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=range(3))
    for c, row in enumerate(rep.rows):
        assert row.name == names[c] and row.support == support[c]
        assert row.se.estimate == pytest.approx(r[c])
        assert row.precision.estimate == pytest.approx(p[c])
        assert row.f1.estimate == pytest.approx(f[c])
        assert row.auc.estimate == pytest.approx(roc_auc_score(y == c, s[:, c]))
        for m in ("se", "sp", "precision", "f1", "auc"):
            iv = getattr(row, m)
            assert 0 <= iv.low < iv.high <= 1 and iv.sd > 0
    assert rep.macro.f1.estimate == pytest.approx(f.mean())
    assert rep.macro.auc.estimate == pytest.approx(roc_auc_score(y, s, multi_class="ovr"))
    assert rep.row("macro") is rep.macro and rep.row("pneumonia") is rep.rows[1]
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["classes"]["normal"]["auc"]["estimate"] == pytest.approx(rep.rows[0].auc.estimate)
    assert d["confusion_matrix"] == confusion_matrix(y, pred, 3).tolist()
    md = rep.to_markdown()
    assert md.count("\n|") == 5 and "| macro | 240 |" in md and f"{100 * r[0]:.1f} [" in md
    h = rep.to_html()
    assert "&lt;covid&gt;" in h and "<covid>" not in h and h.count("<tr>") == 5
    # same seed, same report; torch inputs accepted
    again = classification_report(torch.from_numpy(y), torch.from_numpy(s), names, seed=1, n_samples=2000)
    assert again.rows == rep.rows and again.macro == rep.macro


def test_class_absent_from_y_true_warns_and_gives_nan() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)  # class 2 never occurs
    s = _softmax_scores(rng, y, 3, 1.0)
    with pytest.warns(UndefinedMetricWarning, match="'c'"):
        rep = classification_report(y, s, ["a", "b", "c"], n_samples=500)
    c = rep.row("c")
    assert math.isnan(c.auc.estimate) and math.isnan(c.auc.low) and math.isnan(c.se.estimate)
    assert rep.macro.auc.estimate == pytest.approx(
        np.mean([rep.rows[0].auc.estimate, rep.rows[1].auc.estimate])
    )
    assert math.isfinite(rep.macro.auc.low) and math.isfinite(rep.macro.se.estimate)
    assert "n/a" in rep.to_markdown()
    assert rep.to_dict()["classes"]["c"]["auc"]["estimate"] is None


def test_single_positive_gives_auc_without_interval() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    s = np.eye(3)[[0, 0, 1, 1, 1, 0, 2]] * 0.8 + 0.1
    with pytest.warns(UndefinedMetricWarning, match="at least 2"):
        res = delong_ovr(y, s)
    assert res.auc[2] == 1.0 and math.isnan(res.interval(2).low)
    assert math.isnan(res.interval(None).low)  # the macro variance needs every class's variance


def test_perfect_separation_gives_degenerate_interval() -> None:
    y = np.repeat([0, 1, 2], 10)
    s = np.eye(3)[y] + 0.01 * np.arange(30)[:, None] / 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing undefined here
        rep = classification_report(y, s, ["a", "b", "c"], n_samples=500)
    assert (rep.macro.auc.estimate, rep.macro.auc.low, rep.macro.auc.high) == (1.0, 1.0, 1.0)
    se = rep.rows[0].se
    assert se.estimate == 1.0 and 0.7 < se.low < 1.0 and se.high <= 1.0  # the posterior stays off 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y_true": np.array([0, 1, 2])}, r"scores has 4 rows but y_true has 3"),
        ({"y_true": np.array([0, 1, 3, 1])}, r"y_true holds label 3 but there are 3 classes"),
        ({"y_true": np.array([0, 1, -1, 1])}, r"y_true holds label -1"),
        ({"y_true": np.array([0, 1, 0.5, 1])}, r"integer class labels.*0\.5"),
        ({"y_true": np.array([[0, 1, 1, 1]])}, r"y_true must be a 1-D array.*\(1, 4\)"),
        ({"scores": np.ones(4)}, r"scores must have shape \[N, K\].*\(4,\)"),
        ({"scores": np.full((4, 3), np.nan)}, r"scores holds NaN"),
        ({"class_names": ["a", "b"]}, r"class_names has 2 names but scores has 3 columns"),
        ({"class_names": ["a", "a", "b"]}, r"class_names must be distinct"),
        ({"level": 95}, r"level must be in \(0, 1\).*95"),
        ({"n_samples": 1}, r"n_samples must be an integer >= 2; got 1"),
        ({"prior_alpha": 0.0}, r"prior_alpha must be a positive number.*0\.0"),
    ],
)
def test_classification_report_errors_name_the_argument(kwargs: dict, match: str) -> None:
    args = {
        "y_true": np.array([0, 1, 2, 1]),
        "scores": np.eye(3)[[0, 1, 2, 0]],
        "class_names": ["a", "b", "c"],
    }
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("level", "n_samples", "prior_alpha") if k in args}
    with pytest.raises(ValueError, match=match):
        classification_report(args["y_true"], args["scores"], args["class_names"], **extra)
