"""Statistics shared by eval, the MOS study and the benchmarks: Student's t interval of a mean, paired bootstrap,
win rates, and the two-level bootstraps of benchmarks with several training seeds: items nested in seeds (cluster,
then item) or crossed with them (seeds and items drawn independently).

Pure functions (numpy only).  Comparing systems on the same prompts uses the paired bootstrap and the win rate:

Two systems answered the same prompts, so their per-song values are paired: the difference of means is
estimated by resampling *prompts* (Efron's paired bootstrap, as used for MT/NLG system comparison, Koehn 2004)
and the 95% interval is the 2.5th..97.5th percentile of the resampled differences.  A difference counts as
real when that interval excludes zero.  Songs where a metric does not apply (its control was not requested,
value None) are left out of that metric's pairs.

The win rate of A over B by scorer is the share of prompts where A's song scores higher, ties counting one
half, with the same paired bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


def _percentile_interval(samples, confidence: float) -> tuple[float, float]:
    import numpy as np

    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_means(values, resamples: int, seed: int):
    """Means of ``resamples`` resamples (with replacement) of ``values``; chunked so memory stays ~40 MB."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(values)
    chunk = max(1, 5_000_000 // max(n, 1))
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        out[start:start + k] = values[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def paired_bootstrap(a: Sequence[float | None], b: Sequence[float | None], *, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Mean of ``b - a`` over prompts where both apply, with its paired bootstrap interval.

    ``a`` and ``b`` are aligned per prompt (None = metric not applicable for that prompt).  Returns
    ``{a, b, diff, ci_low, ci_high, significant, n}``; with no pairs every number is None.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired values need the same prompts: {len(a)} vs {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return {"a": None, "b": None, "diff": None, "ci_low": None, "ci_high": None, "significant": False, "n": 0}
    xa = np.array([p[0] for p in pairs], dtype=float)
    xb = np.array([p[1] for p in pairs], dtype=float)
    d = xb - xa
    lo, hi = _percentile_interval(bootstrap_means(d, resamples, seed), confidence)
    return {"a": float(xa.mean()), "b": float(xb.mean()), "diff": float(d.mean()), "ci_low": lo, "ci_high": hi,
            "significant": bool(lo > 0 or hi < 0), "n": len(d)}


def win_rate(a: Sequence[float | None], b: Sequence[float | None], *, resamples: int = DEFAULT_RESAMPLES,
             confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Share of prompts where ``b`` beats ``a`` (ties = 1/2), with a paired bootstrap interval.

    Returns ``{win_rate, ci_low, ci_high, wins, ties, losses, n}`` (win/tie/loss counted for ``b``).
    """
    import numpy as np

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return {"win_rate": None, "ci_low": None, "ci_high": None, "wins": 0, "ties": 0, "losses": 0, "n": 0}
    outcome = np.array([1.0 if y > x else 0.5 if y == x else 0.0 for x, y in pairs])
    lo, hi = _percentile_interval(bootstrap_means(outcome, resamples, seed), confidence)
    return {"win_rate": float(outcome.mean()), "ci_low": lo, "ci_high": hi,
            "wins": int((outcome == 1.0).sum()), "ties": int((outcome == 0.5).sum()),
            "losses": int((outcome == 0.0).sum()), "n": len(outcome)}


# Two-sided 95% critical values of Student's t by degrees of freedom (standard table values).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student t critical value (table, linear in 1/df between entries; 1.960 as df -> inf)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo_df, lo_t, hi_inv, hi_t = keys[-1], _T975[keys[-1]], 0.0, 1.960
        return hi_t + (lo_t - hi_t) * ((1 / df) - hi_inv) / ((1 / lo_df) - hi_inv)
    lo_df = max(k for k in keys if k < df)
    hi_df = min(k for k in keys if k > df)
    w = (1 / df - 1 / hi_df) / (1 / lo_df - 1 / hi_df)
    return _T975[hi_df] + w * (_T975[lo_df] - _T975[hi_df])


def mean_ci95(values: list[float]) -> dict[str, Any]:
    """Mean with Student's t 95% interval; no interval from a single value."""
    n = len(values)
    if not n:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_critical_95(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


# ----------------------------------------------------------------------------------------------------------
# Items nested in clusters (e.g. facts within independent training seeds)


def cluster_bootstrap_means(arms: Sequence[Sequence[Sequence[float]]], resamples: int, seed: int):
    """Two-level bootstrap means, the same draws for every arm (paired): each resample draws the clusters with
    replacement, then within each drawn cluster its items with replacement, and takes the mean over all drawn
    items.  ``arms[i][c]`` holds arm *i*'s item values in cluster *c*; every arm has the same clusters and, per
    cluster, the same items in the same order.  Returns an array of shape (arms, resamples)."""
    import numpy as np

    values = [[np.asarray(c, dtype=float) for c in arm] for arm in arms]
    k = len(values[0])
    if not k or any(len(arm) != k or any(len(c) != len(c0) for c, c0 in zip(arm, values[0])) for arm in values):
        raise ValueError("every arm needs the same clusters with the same number of items")
    rng = np.random.default_rng(seed)
    out = np.zeros((len(values), resamples))
    count = np.zeros(resamples)
    picks = rng.integers(0, k, size=(resamples, k))
    for c in range(k):
        n = len(values[0][c])
        times = (picks == c).sum(axis=1)  # how often cluster c was drawn in each resample
        for r in np.nonzero(times)[0]:
            idx = rng.integers(0, n, size=(times[r], n)).ravel()
            for i, arm in enumerate(values):
                out[i, r] += arm[c][idx].sum()
            count[r] += idx.size
    return out / count


def cluster_mean_ci(values: Sequence[Sequence[float]], *, resamples: int = DEFAULT_RESAMPLES,
                    confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Mean over all items of ``values[cluster][item]`` with its two-level bootstrap interval
    (:func:`cluster_bootstrap_means`).  Returns ``{mean, ci_low, ci_high, clusters, n}``."""
    import numpy as np

    flat = [v for c in values for v in c]
    lo, hi = _percentile_interval(cluster_bootstrap_means([values], resamples, seed)[0], confidence)
    return {"mean": float(np.mean(flat)), "ci_low": lo, "ci_high": hi, "clusters": len(values), "n": len(flat)}


def cluster_paired_bootstrap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *,
                             resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0
                             ) -> dict[str, Any]:
    """``b`` against ``a`` on the same items nested in the same clusters: the difference of means ``b - a`` and
    the ratio ``b / a``, each with the percentile interval of the two-level paired bootstrap
    (:func:`cluster_bootstrap_means`).  The ratio is None when ``a``'s mean is 0; its upper bound is None
    (unbounded) when resamples with ``a``'s mean 0 reach the upper tail.  Also the Student t interval over the
    per-cluster differences (``t_ci_low``, ``t_ci_high``), which treats clusters as the only source of
    variation.  Returns ``{a, b, diff, ci_low, ci_high, significant, ratio, ratio_ci_low, ratio_ci_high,
    t_ci_low, t_ci_high, clusters, n}``."""
    import numpy as np

    ma, mb = cluster_bootstrap_means([a, b], resamples, seed)
    lo, hi = _percentile_interval(mb - ma, confidence)
    mean_a = float(np.mean([v for c in a for v in c]))
    mean_b = float(np.mean([v for c in b for v in c]))
    ratio = ratio_lo = ratio_hi = None
    if mean_a > 0:
        ratios = np.where(ma > 0, mb / np.where(ma > 0, ma, 1.0), np.inf)
        tail = (1.0 - confidence) / 2.0 * 100.0
        ratio = mean_b / mean_a
        # nearest resamples, not interpolation: a tail of infinite ratios (a's mean 0) stays infinite, not NaN
        ratio_lo = float(np.percentile(ratios, tail, method="lower"))
        upper = float(np.percentile(ratios, 100.0 - tail, method="higher"))
        ratio_hi = upper if np.isfinite(upper) else None
        ratio_lo = ratio_lo if np.isfinite(ratio_lo) else None
    per_cluster = mean_ci95([float(np.mean(cb) - np.mean(ca)) for ca, cb in zip(a, b)])
    return {"a": mean_a, "b": mean_b, "diff": mean_b - mean_a, "ci_low": lo, "ci_high": hi,
            "significant": bool(lo > 0 or hi < 0), "ratio": ratio, "ratio_ci_low": ratio_lo,
            "ratio_ci_high": ratio_hi, "t_ci_low": per_cluster["ci_low"], "t_ci_high": per_cluster["ci_high"],
            "clusters": len(a), "n": sum(len(c) for c in a)}


# ----------------------------------------------------------------------------------------------------------
# Items crossed with seeds (every seed's model answers the same prompts)


def seeds_by_items_bootstrap(values, *, resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE,
                             seed: int = 0) -> dict[str, Any]:
    """Mean of a seeds x items table with a two-way bootstrap interval: for benchmarks that train one model per
    seed and score every model on the same items (prompts).  Where each seed has its own items (nested, e.g.
    films drawn per seed) use :func:`cluster_mean_ci` / :func:`cluster_paired_bootstrap` instead.

    Each resample draws seeds with replacement and, independently, items with replacement, and takes the mean of
    the drawn rows x columns; the interval is the 2.5th..97.5th percentile.  Drawing items once for all drawn
    seeds (not anew per seed) keeps the items' shared effect in the interval, since every seed answered the same
    items; it is the conservative choice for such crossed data.  ``values``: one row per seed, one column per item;
    for a paired difference pass the per-seed, per-item differences of two arms.  Returns ``{mean, ci_low,
    ci_high, significant, n_seeds, n_items}`` (significant: the interval excludes 0).
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.ndim != 2 or not x.size:
        raise ValueError(f"seeds_by_items_bootstrap needs a non-empty seeds x items table, got shape {x.shape}")
    n_seeds, n_items = x.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        rows = rng.integers(0, n_seeds, size=(k, n_seeds))
        cols = rng.integers(0, n_items, size=(k, n_items))
        means[start:start + k] = x[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    lo, hi = _percentile_interval(means, confidence)
    return {"mean": float(x.mean()), "ci_low": lo, "ci_high": hi, "significant": bool(lo > 0 or hi < 0),
            "n_seeds": n_seeds, "n_items": n_items}


# ----------------------------------------------------------------------------------------------------------
# Proportions and agreement (violation %, false-refusal %, a detector or judge against hand labels)


def proportion_ci95(successes: int, n: int) -> dict[str, Any]:
    """A share with its Wilson score 95% interval (Wilson 1927): unlike the t interval of 0/1 values it stays
    inside [0, 1] and is not of zero width at 0 or n successes.  Returns ``{mean, ci_low, ci_high, k, n}``."""
    if n <= 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "k": 0, "n": 0}
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({successes} of {n})")
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not rounding noise
    high = 1.0 if successes == n else min(1.0, centre + half)
    return {"mean": p, "ci_low": low, "ci_high": high, "k": successes, "n": n}


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two labellings of the same items: (p_o − p_e) / (1 − p_e); None when undefined (no items,
    or both labellings constant and equal, so chance agreement is already 1)."""
    if len(a) != len(b):
        raise ValueError("both labellings need the same items")
    n = len(a)
    if not n:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    labels = set(a) | set(b)
    expected = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in labels)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)
