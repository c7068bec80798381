"""Comparing systems on the same prompts: paired bootstrap confidence intervals and scorer win rates.

Two systems answered the same prompts, so their per-song values are paired: the difference of means is
estimated by resampling *prompts* (Efron's paired bootstrap, as used for MT/NLG system comparison, Koehn 2004)
and the 95% interval is the 2.5th..97.5th percentile of the resampled differences.  A difference counts as
real when that interval excludes zero.  Songs where a metric does not apply (its control was not requested,
value None) are left out of that metric's pairs.

The win rate of A over B by scorer is the share of prompts where A's song scores higher, ties counting one
half, with the same paired bootstrap interval.
"""

from __future__ import annotations

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


def compare_systems(per_song: dict[str, list[dict]], metrics: Sequence[str], *, baseline: str | None = None,
                    scores: dict[str, list[float | None]] | None = None, resamples: int = DEFAULT_RESAMPLES,
                    confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """Every system against the baseline (default: the first), metric by metric; win rates for every pair.

    ``per_song``: system -> per-prompt metric dicts, aligned by prompt (same length for every system).
    ``scores``: optional system -> per-prompt scorer score, for the win rates and the score difference.
    """
    names = list(per_song)
    if not names:
        return {"baseline": None, "pairs": [], "win_rates": []}
    baseline = baseline or names[0]
    if baseline not in per_song:
        raise ValueError(f"unknown baseline system {baseline!r}")
    lengths = {name: len(rows) for name, rows in per_song.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"systems must answer the same prompts to be compared; songs per system: {lengths}")
    base_rows = per_song[baseline]
    pairs = []
    for name in names:
        if name == baseline:
            continue
        rows = per_song[name]
        result = {m: paired_bootstrap([r.get(m) for r in base_rows], [r.get(m) for r in rows],
                                      resamples=resamples, confidence=confidence, seed=seed) for m in metrics}
        if scores and baseline in scores and name in scores:
            result["scorer"] = paired_bootstrap(scores[baseline], scores[name], resamples=resamples,
                                                confidence=confidence, seed=seed)
        pairs.append({"a": baseline, "b": name, "metrics": result})
    wins = []
    if scores:
        scored = [n for n in names if n in scores]
        for i, a in enumerate(scored):
            for b in scored[i + 1:]:
                wins.append({"a": a, "b": b, **win_rate(scores[a], scores[b], resamples=resamples,
                                                        confidence=confidence, seed=seed)})
    return {"baseline": baseline, "confidence": confidence, "resamples": resamples, "pairs": pairs,
            "win_rates": wins}
