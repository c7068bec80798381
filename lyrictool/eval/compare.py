"""Every system against the baseline, metric by metric, with paired bootstrap CIs; scorer win rates per pair."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lyrictool.stats import CONFIDENCE, DEFAULT_RESAMPLES, paired_bootstrap, win_rate


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
