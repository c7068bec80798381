"""bench/knowledge_injection.py: the quick mode runs every arm through the product path and writes results.json
with the per-seed numbers, the intervals and the matched step counts; the statistics pair arms by seed and fact."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_module():
    spec = importlib.util.spec_from_file_location("knowledge_injection_bench", REPO / "bench" / "knowledge_injection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_unit(x) -> bool:
    return x is not None and 0.0 <= x <= 1.0


def test_quick_run_writes_every_arm_at_matched_steps(tmp_path):
    out = tmp_path / "ki"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "knowledge_injection.py"), "--quick", "--out", str(out)],
                       check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["seeds"] == [0] and set(res["arms"]) == {"task_short", "task", "mem", "seq", "mix"}
    matched = res["steps"]["matched_total"]
    for key, arm in res["arms"].items():
        # every arm but the short reference trains for the same total number of optimizer steps
        assert arm["total_steps"] == (res["steps"]["task"] if key == "task_short" else matched)
        acc = arm["accuracy"]
        assert in_unit(acc["mean"]) and in_unit(acc["ci_low"]) and in_unit(acc["ci_high"])
        assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"] and acc["n"] == 5 * res["held_out_films"]
        seed0 = arm["per_seed"]["0"]
        assert len(seed0["facts"]) == acc["n"] and set(seed0["facts"]) <= {0, 1}
        assert seed0["accuracy"] == sum(seed0["facts"]) / acc["n"] and in_unit(seed0["train_films_accuracy"])
    for key in ("seq", "mix"):  # the QA probe of the held-out films, and the memorization probe
        assert in_unit(res["arms"][key]["qa_held_out"]["mean"]) and in_unit(res["arms"][key]["memorized_held_out"]["mean"])
    pairs = {(c["a"], c["b"]): c for c in res["comparisons"]}
    assert {("task", "seq"), ("task", "mix"), ("seq", "mix")} <= set(pairs)
    for c in pairs.values():
        assert -1 <= c["ci_low"] <= c["diff"] <= c["ci_high"] <= 1 and "ratio" in c and "ratio_ci_low" in c
    assert {c["probe"] for c in res["probe_comparisons"]} == {"qa_facts", "memorized_facts"}
    # the mixed arm's memorize stage trained on the texts and the training films' questions together
    stages = res["stages"]["seed-0"]
    assert stages["mix"]["rows"] == stages["mem"]["rows"] + stages["mem+qa"]["rows"]
    tm = res["time"]
    assert tm["import_torch_s"] > 0 and tm["cpu_s"] > 0 and tm["wall_s"] > 0 and len(tm["loadavg_start"]) == 3
    assert "| task-only, steps-matched |" in r.stdout and "b - a [95% CI]" in r.stdout


def test_summary_pairs_arms_by_seed_and_fact():
    bench = bench_module()
    # two seeds, four facts each: the injection arm gets one more fact right than task-only in every seed
    jobs = [{"seed": s, "chance": 0.05, "arms": {
        "task": {"facts": [1, 0, 0, 0], "accuracy": 0.25, "steps": {"task": 12}, "total_steps": 12},
        "seq": {"facts": [1, 1, 0, 0], "accuracy": 0.5, "steps": {"memorize": 6, "qa": 2, "task": 4},
                "total_steps": 12, "qa_facts": [0, 1, 0, 0]}}} for s in (0, 1)]
    summary = bench.summarize({}, jobs)
    assert summary["seeds"] == [0, 1] and summary["arms"]["seq"]["qa_held_out"]["mean"] == 0.25
    (c,) = summary["comparisons"]
    assert (c["a"], c["b"]) == ("task", "seq") and c["per_seed_diff"] == [0.25, 0.25]
    assert c["diff"] == 0.25 and c["ratio"] == 2.0 and c["t_ci_low"] == c["t_ci_high"] == 0.25
    assert c["ci_low"] < c["diff"] < c["ci_high"]  # resampling the facts moves it
