"""The audit's summaries: a rate or a mean with its 95% interval, overall, per source and per class.

Rates (flip rate, shortcut-following rate, accuracy) get the Jeffreys interval, the quantiles of
``Beta(k + 1/2, n - k + 1/2)`` (Brown, Cai and DasGupta 2001); means (|Δp|, confidence, the
background relevance share) a percentile bootstrap over images with a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import beta


def rate_interval(k: int, n: int, level: float = 0.95) -> dict[str, float | int | None]:
    """``k`` of ``n``: the estimate ``k / n`` and its Jeffreys interval (``None`` for ``n = 0``)."""
    if n == 0:
        return {"estimate": None, "low": None, "high": None, "n": 0}
    tail = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k + 0.5, n - k + 0.5))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 0.5, n - k + 0.5))
    return {"estimate": k / n, "low": low, "high": high, "n": int(n)}


def mean_interval(
    values: Sequence[float] | np.ndarray, seed: int = 0, level: float = 0.95, n_boot: int = 2000
) -> dict[str, float | int | None]:
    """The mean of the finite ``values`` and its percentile-bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"estimate": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    tail = 100 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"estimate": float(v.mean()), "low": float(low), "high": float(high), "n": int(v.size)}


def summarise(
    values: np.ndarray,
    sources: Sequence[str],
    classes: Sequence[str] | None,
    kind: str,
    seed: int = 0,
    where: np.ndarray | None = None,
) -> dict[str, Any]:
    """``{"overall": I, "by_source": {s: I}, "by_class": {c: I}}`` of ``values`` (booleans for
    ``kind="rate"``, numbers for ``kind="mean"``) over the images selected by ``where``."""
    if kind not in ("rate", "mean"):
        raise ValueError(f"kind must be 'rate' or 'mean', got {kind!r}")
    v = np.asarray(values)
    keep = np.ones(len(v), dtype=bool) if where is None else np.asarray(where, dtype=bool)
    src = np.asarray([str(s) for s in sources])

    def one(sel: np.ndarray) -> dict[str, Any]:
        chosen = v[sel & keep]
        if kind == "rate":
            return rate_interval(int(np.count_nonzero(chosen)), int(chosen.size))
        return mean_interval(chosen.astype(np.float64), seed=seed)

    out: dict[str, Any] = {"overall": one(np.ones(len(v), dtype=bool))}
    out["by_source"] = {s: one(src == s) for s in sorted(set(src.tolist()))}
    if classes is not None:
        cls = np.asarray([str(c) for c in classes])
        out["by_class"] = {c: one(cls == c) for c in dict.fromkeys(cls.tolist())}
    return out


def estimate(summary: dict[str, Any]) -> float:
    """The overall estimate of a :func:`summarise` result (NaN when undefined)."""
    value = summary["overall"]["estimate"]
    return math.nan if value is None else float(value)


__all__ = ["estimate", "mean_interval", "rate_interval", "summarise"]
