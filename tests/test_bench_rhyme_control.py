"""bench/rhyme_control.py --quick: every arm trains for the same number of optimizer steps through `lyrictool
inject`, and results.json carries per-seed, per-prompt scores with CIs for every arm and difference."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SONGCI = REPO.parent / "shared" / "data" / "chinese-poetry" / "songci"


@pytest.mark.skipif(not SONGCI.is_dir(), reason="needs the chinese-poetry corpus at ../shared/data")
def test_quick_mode_writes_matched_arms_with_intervals(tmp_path):
    out = tmp_path / "rc"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "rhyme_control.py"), "--quick", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "| difference phonetic - hints" in proc.stdout  # the printed markdown table

    assert res["seeds"] == [0] and res["test_prompts"] == 8
    assert 0 <= res["base_rate_floor"] <= 1 and 0 <= res["reference_songs"] <= 1
    (budget,) = res["budgets"].values()
    assert set(budget["arms"]) == {"plain", "hints", "phonetic"}
    for arm in budget["arms"].values():
        assert set(arm["per_seed"]) == {"0"}
        for ci in (arm["bootstrap"], arm["t_over_seeds"]):
            assert 0 <= ci["mean"] <= 1
        boot = arm["bootstrap"]
        assert 0 <= boot["ci_low"] <= boot["mean"] <= boot["ci_high"] <= 1
    assert set(budget["differences"]) == {"hints - plain", "phonetic - hints", "phonetic - plain"}
    for d in budget["differences"].values():
        assert -1 <= d["bootstrap"]["ci_low"] <= d["bootstrap"]["mean"] <= d["bootstrap"]["ci_high"] <= 1
        assert d["t_over_seeds"]["ci_low"] is None  # no t interval from one seed
        assert d["both_exclude_0"] is False

    # matched budgets: every run took the budget's total of optimizer steps, the phonetic arm over three stages
    runs = res["runs"]
    assert {r["arm"] for r in runs} == {"plain", "hints", "phonetic"}
    for r in runs:
        assert r["optimizer_steps"] == budget["budget"]["total"]
        assert len(r["scores"]) == 8 and all(0 <= x <= 1 for x in r["scores"])
        assert r["tokens_seen_est"] > 0
    phonetic = next(r for r in runs if r["arm"] == "phonetic")
    assert [s["name"] for s in phonetic["stages"]] == ["memorize", "understand", "utilize"]
    timing = res["timing"]
    assert timing["wall_s"] > 0 and timing["cpu_s"] > 0 and timing["import_torch"]["wall_s"] > 0
    assert "mean" in timing["load_average"]
