"""bench/safety_balance.py --quick: the whole chain (SFT, the three scorers from the shipped tiny recipes, a
rejection-sampling round per arm and seed, the test requests judged) on the tiny model; the two arms take equal
optimizer steps, the combined arm records tau and the rule's choices, results.json carries per-seed, per-request
figures with ordered CIs and the verdict; a --reuse rerun reads every stage and run back instead of retraining."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "safety_balance.py"
METRICS = {"violation", "false_refusal", "helpfulness", "rhyme_accuracy", "judge_p_safe", "red_team_refused"}


def ordered(ci: dict) -> bool:
    return ci["ci_low"] <= ci["mean"] <= ci["ci_high"]


def test_quick_mode_runs_both_arms_at_equal_steps_with_intervals_and_reuse(tmp_path):
    out = tmp_path / "sb"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--workers", "1", "--sft-safety", "10", "--out", str(out)], check=False,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| combined - scorer |" in proc.stdout and "**Verdict**" in proc.stdout
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["arms"] == ["scorer", "combined"] and res["seeds"] == [0, 1]

    # the shared stages: the shipped recipes, the scorers' held-out accuracy, the judge against the hand labels
    assert {s["recipe"] for s in res["stages"].values()} == {
        "recipes/tiny/sft.yaml", "recipes/tiny/score.yaml", "recipes/tiny/score-safety.yaml",
        "recipes/tiny/score-judge.yaml"}
    for name in ("lyrics", "safety", "judge"):
        assert 0 <= res["checks"]["scorers"][name]["pairwise_accuracy"] <= 1
    judge = res["checks"]["judge"]
    assert judge["n"] >= 200 and 0 < judge["all_safe_agreement"] < 1 and "refusal_detector" in judge
    assert 0 < res["checks"]["tau"]["tau"] < 1
    # --sft-safety: the demo songs plus safe answers of the scorer split, never a false refusal
    sft_rows = [json.loads(x) for x in (out / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(sft_rows) == 130 + 10 and f"data.train={out / 'sft_train.jsonl'}" in res["stages"]["sft"]["overrides"]
    safe = {json.loads(x)["id"]: json.loads(x) for x in (REPO / "lyrictool" / "data" / "safety" / "lyrics-scorer.jsonl")
            .read_text(encoding="utf-8").splitlines()}
    added = [safe[r["id"]] for r in sft_rows if "id" in r]
    assert len(added) == 10 and all(a["label"] == "safe" and (a["safety"] or a["kind"] == "answer") for a in added)

    # test requests: red-team and harmless of the judge split (no minors), eval prompts; never the round's
    test = res["test"]
    assert len(test["red"]) == 4 and len(test["harmless"]) == 4 and set(test["modern"]) <= set(test["harmless"])
    assert not any("minors" in i for i in test["red"])
    assert not {r["id"] for r in res["round_prompts"]} & set(test["red"] + test["harmless"])

    # equal steps; tau and the rule's choice recorded for the combined arm only
    runs = {(r["arm"], r["seed"]): r for r in res["runs"]}
    assert len(runs) == 4
    for (arm, _), r in runs.items():
        assert r["train"]["optimizer_steps"] == res["config"]["rs_steps"] == 2
        assert len(r["scores"]["red"]) == 4 and len(r["scores"]["harmless"]) == 4 and len(r["answers"]) == 8
        if arm == "combined":
            assert r["train"]["tau"]["tau"] == res["checks"]["tau"]["tau"]
            assert 0 <= r["train"]["safety_rule_chose_safety"] <= 1
            assert {"scorer", "safety", "blocklist", "rhyme"} <= set(r["train"]["best_components_mean"])
        else:
            assert r["train"]["tau"] is None and set(r["train"]["best_components_mean"]) == {"scorer"}

    # the same SFT model and seed sample the same candidates: the arms differ only in which one wins
    for seed in ("0", "1"):
        choice = res["checks"]["choices"][seed]
        assert choice["same_candidates"] is True and choice["requests"] == 4 and choice["red_team"] == 2
        assert 0 <= choice["red_team_winners_differ"] <= choice["winners_differ"] <= 4

    for metric in METRICS:
        m = res["results"][metric]
        for arm in ("scorer", "combined"):
            assert ordered(m["arms"][arm]["bootstrap"]) and ordered(m["arms"][arm]["t_over_seeds"])
            if metric != "judge_p_safe":
                assert 0 <= m["arms"][arm]["bootstrap"]["ci_low"] and m["arms"][arm]["bootstrap"]["ci_high"] <= 1
        d = m["differences"]["combined - scorer"]
        assert ordered(d["bootstrap"]) and ordered(d["t_over_seeds"]) and set(d["per_seed"]) == {"0", "1"}
    assert res["plot"] == str(out / "tradeoff.png") and (out / "tradeoff.png").stat().st_size > 0
    assert [v["metric"] for v in res["verdict"]] == ["violation", "false_refusal", "helpfulness", "rhyme_accuracy"]
    assert all(v["met"] in (True, False) for v in res["verdict"])
    timing = res["timing"]
    assert timing["wall_s"] > 0 and timing["import_torch"]["wall_s"] > 0 and "mean" in timing["load_average"]

    # --reuse: the SFT model, the scorers and every run are read back, not retrained or re-sampled
    again = subprocess.run([sys.executable, str(BENCH), "--quick", "--reuse", "--workers", "1", "--sft-safety", "10",
                            "--out", str(out)],
                           check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reused") >= 8  # 4 stages + 4 runs
    rerun = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert all(s["reused"] for s in rerun["stages"].values())
    assert [r["scores"] for r in rerun["runs"]] == [r["scores"] for r in res["runs"]]


def test_the_gemma_scorer_recipes_the_bench_trains_are_valid():
    from lyrictool.recipes import load_recipe

    for name in ("score", "score-safety", "score-judge"):
        recipe = load_recipe(REPO / "recipes" / "gemma" / f"{name}.yaml", "score")
        assert recipe.model.name == "builtin:gemma-3-270m-zh" and recipe.model.lora is not None
        assert recipe.train["use_cpu"] is True and recipe.train["bf16"] is True
