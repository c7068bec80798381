"""The two-level bootstraps the benchmarks use: items nested in clusters (facts within training seeds) and items
crossed with seeds (the same prompts for every seed)."""

from __future__ import annotations

import numpy as np
import pytest

from lyrictool.stats import (
    bootstrap_means,
    cluster_mean_ci,
    cluster_paired_bootstrap,
    seeds_by_items_bootstrap,
)


def test_one_cluster_is_the_item_bootstrap():
    values = np.random.default_rng(1).integers(0, 2, 200).astype(float)
    ci = cluster_mean_ci([values], resamples=4000)
    flat = np.percentile(bootstrap_means(values, 4000, 7), [2.5, 97.5])
    assert ci["mean"] == pytest.approx(values.mean()) and ci["clusters"] == 1 and ci["n"] == 200
    assert ci["ci_low"] == pytest.approx(flat[0], abs=0.015) and ci["ci_high"] == pytest.approx(flat[1], abs=0.015)


def test_differences_between_clusters_widen_the_interval():
    # three seeds that disagree (0.1, 0.5, 0.9 of their 100 items right): the items alone would give a narrow
    # interval around 0.5; resampling the seeds too must show that a new seed could land far from it
    clusters = [[1.0] * k + [0.0] * (100 - k) for k in (10, 50, 90)]
    wide = cluster_mean_ci(clusters)
    narrow = np.percentile(bootstrap_means(np.concatenate(clusters), 2000, 0), [2.5, 97.5])
    assert wide["mean"] == pytest.approx(0.5)
    assert wide["ci_high"] - wide["ci_low"] > 4 * (narrow[1] - narrow[0])
    assert wide["ci_low"] < 0.25 and wide["ci_high"] > 0.75


def test_paired_difference_and_ratio_keep_items_paired():
    rng = np.random.default_rng(0)
    a = [rng.uniform(0.1, 1.0, 50) for _ in range(4)]
    shifted = cluster_paired_bootstrap(a, [c + 0.1 for c in a])  # the same items, each 0.1 higher
    assert shifted["diff"] == pytest.approx(0.1)
    assert shifted["ci_low"] == pytest.approx(0.1) and shifted["ci_high"] == pytest.approx(0.1)
    assert shifted["significant"] and shifted["t_ci_low"] == pytest.approx(0.1)
    doubled = cluster_paired_bootstrap(a, [2 * c for c in a])
    assert doubled["ratio"] == pytest.approx(2.0)
    assert doubled["ratio_ci_low"] == pytest.approx(2.0) and doubled["ratio_ci_high"] == pytest.approx(2.0)
    same = cluster_paired_bootstrap(a, a)
    assert same["diff"] == 0 and not same["significant"] and same["clusters"] == 4 and same["n"] == 200


def test_ratio_against_zero_and_mismatched_items():
    zeros = [[0.0] * 10, [0.0] * 10]
    r = cluster_paired_bootstrap(zeros, [[1.0] * 10, [0.0] * 10])
    assert r["ratio"] is None and r["diff"] == pytest.approx(0.5) and r["ci_high"] == pytest.approx(1.0)
    rare = [[1.0] + [0.0] * 19, [0.0] * 20]  # a's mean is 0 in many resamples: the upper bound is unbounded
    r = cluster_paired_bootstrap(rare, [[1.0] * 20, [1.0] * 20])
    assert r["ratio"] == pytest.approx(40.0) and r["ratio_ci_high"] is None and 1.0 < r["ratio_ci_low"] < 40.0
    with pytest.raises(ValueError, match="same clusters"):
        cluster_paired_bootstrap([[1.0, 0.0]], [[1.0]])


def test_seeds_by_items_bootstrap_pairs_seeds_and_items():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, size=(4, 60))
    better = seeds_by_items_bootstrap(noise + 0.5, seed=0)
    assert better["n_seeds"] == 4 and better["n_items"] == 60
    assert better["ci_low"] > 0 and better["significant"]
    assert better["ci_low"] < better["mean"] < better["ci_high"]
    null = seeds_by_items_bootstrap(noise - noise.mean(), seed=0)
    assert null["ci_low"] < 0 < null["ci_high"] and not null["significant"]
    # one seed far off widens the interval: seeds are resampled, not only items
    shifted = noise.copy()
    shifted[0] += 2.0
    wide = seeds_by_items_bootstrap(shifted, seed=0)
    assert wide["ci_high"] - wide["ci_low"] > 3 * (better["ci_high"] - better["ci_low"])
    with pytest.raises(ValueError):
        seeds_by_items_bootstrap([1.0, 2.0])
