"""bench/real_rhyme.py --quick --after-sft: every arm (base zero/few-shot, plain, hints, phonetic, then rejection
sampling, GRPO, the rhyme guard and a guarded rejection-sampling round from the hints model) runs through the project's own run functions, trained arms at equal
optimizer steps, and results.json carries per-seed, per-prompt scores with CIs for rhyme and the fluency figures
beside it, for both prompt sets; a --reuse rerun of one arm reads its finished run back instead of retraining."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SONGCI = REPO.parent / "shared" / "data" / "chinese-poetry" / "songci"
BENCH = REPO / "bench" / "real_rhyme.py"


@pytest.mark.skipif(not SONGCI.is_dir(), reason="needs the chinese-poetry corpus at ../shared/data")
def test_quick_mode_scores_every_arm_with_fluency_and_intervals(tmp_path):
    out = tmp_path / "rr"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--after-sft", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| difference | rhyme (t over seeds) | rhyme | perplexity (base) | repeated lines" in proc.stdout
    assert "| grpo - hints |" in proc.stdout and "| rs - hints |" in proc.stdout
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    arms = ["zero-shot", "few-shot", "plain", "hints", "phonetic", "rs", "grpo", "guard", "rs-guard"]
    assert res["arms"] == arms and res["seeds"] == [0] and res["prompts"] == {"songci": 4, "modern": 4}
    assert 0 <= res["base_rate_floor"]["songci"] <= 1
    assert res["reference_songs"]["songci"]["rhyme_accuracy"] > 0.5  # the held-out 宋词 mostly rhyme as stated

    for prompt_set in ("songci", "modern"):
        figures = res["results"][prompt_set]
        assert {"rhyme_accuracy", "log_ppl", "repeated_lines", "repeated_rhyme_chars", "distinct_2",
                "line_length_accuracy"} <= set(figures)
        for metric, m in figures.items():
            assert set(m["arms"]) == set(arms)
            for arm in m["arms"].values():
                boot = arm["bootstrap"]
                assert boot["ci_low"] <= boot["mean"] <= boot["ci_high"]
                if metric != "log_ppl":
                    assert 0 <= boot["ci_low"] and boot["ci_high"] <= 1
            assert set(m["differences"]) == {"few-shot - zero-shot", "plain - few-shot", "hints - plain",
                                             "phonetic - hints", "phonetic - plain", "hints - few-shot", "rs - hints",
                                             "grpo - hints", "guard - hints", "rs-guard - guard",
                                             "rs-guard - few-shot"}
            for d in m["differences"].values():
                assert d["t_over_seeds"]["ci_low"] is None and d["both_exclude_0"] is False  # one seed: no t interval
        assert figures["log_ppl"]["arms"]["zero-shot"]["bootstrap"]["mean"] > 0  # a mean NLL per token, in nats

    runs = {r["arm"]: r for r in res["runs"]}
    budget = res["config"]["budget"]["total"]
    for arm in ("plain", "hints", "phonetic"):  # equal optimizer steps, all stages counted
        assert runs[arm]["train"]["optimizer_steps"] == budget and runs[arm]["train"]["tokens_seen_est"] > 0
    assert [s["name"] for s in runs["phonetic"]["stages"]] == ["memorize", "understand", "utilize"]
    assert runs["rs"]["train"]["optimizer_steps"] == res["config"]["rs_steps"]
    assert runs["grpo"]["train"]["optimizer_steps"] == res["config"]["grpo_steps"]
    assert runs["rs-guard"]["train"]["optimizer_steps"] == res["config"]["rs_steps"]
    assert runs["guard"]["train"] == {}  # the hints model as it is, only sampled (with the guard)
    assert "candidate_reward_mean" in runs["rs"]["train"]["after_sft"]
    for r in runs.values():
        for prompt_set, n in (("songci", 4), ("modern", 4)):
            assert len(r["scores"][prompt_set]) == n == len(r["samples"][prompt_set])
    # only the hints model (which rs and grpo start from) keeps its weights
    assert any((out / "hints-seed0").glob("*.safetensors"))
    assert not any((out / "plain-seed0").glob("*.safetensors"))
    assert not list((out / "hints-seed0").glob("stage-*"))
    timing = res["timing"]
    assert timing["wall_s"] > 0 and timing["cpu_s"] > 0 and timing["import_torch"]["wall_s"] > 0
    assert "mean" in timing["load_average"]

    # --reuse: a finished run is read back, not retrained or re-sampled
    again = subprocess.run([sys.executable, str(BENCH), "--quick", "--arms", "plain", "--reuse", "--workers", "1",
                            "--out", str(out)], check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "plain seed 0:" in again.stdout and "reused" in again.stdout
    rerun = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert rerun["runs"][0]["scores"] == runs["plain"]["scores"]
