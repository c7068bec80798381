"""System comparison statistics: a real difference is detected, equal systems are not."""

from __future__ import annotations

import random

import pytest

from lyrictool.eval.compare import compare_systems
from lyrictool.stats import paired_bootstrap, win_rate


def test_known_difference_is_detected():
    rng = random.Random(1)
    base = [rng.random() < 0.4 for _ in range(200)]          # ~40% correct
    better = [b or rng.random() < 0.5 for b in base]          # same prompts, ~70% correct
    r = paired_bootstrap([float(x) for x in base], [float(x) for x in better], seed=0)
    assert r["n"] == 200
    assert r["diff"] == pytest.approx(sum(better) / 200 - sum(base) / 200)
    assert r["ci_low"] > 0.2 and r["significant"]
    assert r["ci_low"] <= r["diff"] <= r["ci_high"]


def test_equal_systems_are_not_called_different():
    rng = random.Random(2)
    a = [rng.random() for _ in range(150)]
    b = [rng.random() for _ in range(150)]  # same distribution, independent draws
    r = paired_bootstrap(a, b, seed=0)
    assert r["ci_low"] < 0 < r["ci_high"] and not r["significant"]
    same = paired_bootstrap(a, a, seed=0)
    assert same["diff"] == 0 and same["ci_low"] == 0 == same["ci_high"] and not same["significant"]


def test_not_applicable_values_are_left_out_of_pairs():
    r = paired_bootstrap([1.0, None, 0.0, 1.0], [1.0, 1.0, None, 0.0])
    assert r["n"] == 2 and r["a"] == 1.0 and r["b"] == 0.5
    assert paired_bootstrap([None], [None])["diff"] is None


def test_win_rate_counts_ties_as_half():
    r = win_rate([0.1, 0.5, 0.9, 0.3], [0.2, 0.5, 0.1, 0.9], seed=0)
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 1, 1, 4)
    assert r["win_rate"] == pytest.approx(2.5 / 4)
    assert 0.0 <= r["ci_low"] <= r["win_rate"] <= r["ci_high"] <= 1.0


def test_compare_systems_against_baseline():
    base = [{"rhyme_accuracy": 0.0, "structure_accuracy": None}] * 30
    final = [{"rhyme_accuracy": 1.0, "structure_accuracy": 0.5}] * 30
    scores = {"base": [0.0] * 30, "final": [1.0] * 30}
    out = compare_systems({"base": base, "final": final}, ["rhyme_accuracy", "structure_accuracy"], scores=scores)
    assert out["baseline"] == "base"
    (pair,) = out["pairs"]
    assert pair["b"] == "final"
    assert pair["metrics"]["rhyme_accuracy"]["diff"] == 1.0 and pair["metrics"]["rhyme_accuracy"]["significant"]
    assert pair["metrics"]["structure_accuracy"]["n"] == 0
    assert pair["metrics"]["scorer"]["diff"] == 1.0
    (wins,) = out["win_rates"]
    assert (wins["a"], wins["b"], wins["win_rate"]) == ("base", "final", 1.0)


def test_compare_refuses_unaligned_systems():
    with pytest.raises(ValueError, match="same prompts"):
        compare_systems({"a": [{}] * 3, "b": [{}] * 4}, ["rhyme_accuracy"])
