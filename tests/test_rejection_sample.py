"""`lyrictool rejection-sample`: keeps the max, resumes after a kill without duplicates, pools rounds, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe
from lyrictool.rewards import RewardSpec, combine, rule_rewards

REPO = Path(__file__).resolve().parents[1]
SONGS = [json.loads(line) for line in (REPO / "lyrictool/data/demo/songs.jsonl").read_text("utf-8").splitlines()]


def recipe_text(prompts: Path, out: Path, *, k: int = 3, extra: str = "") -> str:
    return f"""
data: {{train: {prompts}, controls: [genre, topic, rhyme, structure, line_lengths]}}
sampling: {{k: {k}, max_new_tokens: 24, batch_size: 2, temperature: 1.0}}
rewards:
  - {{name: rhyme, weight: 1.0}}
  - {{name: line_length, weight: 0.5}}
  - {{name: format, weight: 2.0}}
train: {{max_steps: 2, per_device_train_batch_size: 4, activation_checkpointing: false, use_cpu: true}}
output_dir: {out}
{extra}
"""


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


@pytest.fixture()
def prompts(write_jsonl):
    # prompt rows as builtin:eval-prompts has them, and lyrics rows whose controls are read off the lyrics
    rows = [{"id": f"p{i}", "controls": {"topic": s["controls"]["topic"], "rhyme": s["controls"]["rhyme"]}}
            for i, s in enumerate(SONGS[:3])]
    rows.append({"id": "song", "lyrics": SONGS[5]["lyrics"], "controls": SONGS[5]["controls"]})
    return write_jsonl("prompts.jsonl", rows)


def test_keeps_the_max_for_every_prompt_then_two_rounds_of_sft(prompts, write_recipe, tmp_path):
    from lyrictool.train.rejection_sample import run_rejection_sample

    out = tmp_path / "rs"
    recipe = load_recipe(write_recipe(recipe_text(prompts, out, extra="finetune: true\nrounds: 2\n")),
                         "rejection-sample")
    summary = run_rejection_sample(recipe)
    rows = rows_of(out / "samples.jsonl")
    assert sorted((r["round"], r["id"]) for r in rows) == sorted((r, p) for r in (1, 2)
                                                                  for p in ("p0", "p1", "p2", "song"))
    specs = recipe.rewards
    for row in rows:
        assert len(row["candidates"]) == 3
        totals = [c["reward"] for c in row["candidates"]]
        assert totals[row["best"]] == max(totals) and totals[row["worst"]] == min(totals)
        assert row["chosen"] == row["candidates"][row["best"]]["lyrics"]
        assert row["rejected"] == row["candidates"][row["worst"]]["lyrics"]
        for c in row["candidates"]:
            assert "〔" not in c["lyrics"]  # hints stripped
            comps = rule_rewards(c["lyrics"], row["controls"], names=[s.name for s in specs])
            assert c["rewards"] == pytest.approx(comps, abs=1e-6)
            assert c["reward"] == pytest.approx(combine(comps, specs)[0], abs=1e-5)
    song_row = next(r for r in rows if r["id"] == "song")
    assert "structure" in song_row["controls"] and "line_lengths" in song_row["controls"]  # derived from lyrics
    # round 2 sampled from round 1's model; the final model is in output_dir
    info = summary["metrics"]["rounds"]
    assert info[1]["policy"] == str(out / "round-1")
    assert (out / "round-1" / "config.json").exists() and (out / "config.json").exists()
    # round 2 fine-tunes on each prompt's best candidate of rounds 1 and 2 together, recomputed from samples.jsonl
    pooled = [max(c["reward"] for r in rows if r["id"] == p for c in r["candidates"]) for p in ("p0", "p1", "p2", "song")]
    assert info[1]["pooled_best_reward_mean"] == pytest.approx(sum(pooled) / 4, abs=1e-4)
    round2 = [max(c["reward"] for c in r["candidates"]) for r in rows if r["round"] == 2]
    assert info[1]["best_reward_mean"] == pytest.approx(sum(round2) / 4, abs=1e-4)
    assert json.loads((out / "summary.json").read_text("utf-8"))["k"] == 3
    # one process: rows straight into samples.jsonl, no part file; one rank entry holding the whole round
    assert not list(out.glob("samples.rank*"))
    sampling = info[0]["sampling"]
    assert sampling["candidates"] == 12 and sampling["ranks"] == [
        {"rank": 0, "prompts": 4, "candidates": 12, "seconds": sampling["seconds"],
         "new_tokens": sampling["new_tokens"]}]


def test_best_across_rounds_pools_every_round():
    from lyrictool.train.rejection_sample import best_across_rounds

    def row(pid, rnd, rewards):
        return {"id": pid, "round": rnd, "controls": {}, "best": rewards.index(max(rewards)),
                "candidates": [{"lyrics": f"{pid}-{rnd}-{i}", "reward": r} for i, r in enumerate(rewards)]}

    rows = [row("a", 1, [0.2, 0.9]), row("b", 1, [0.1]), row("a", 2, [0.5, 0.3]), row("b", 2, [0.4]),
            row("a", 3, [1.5])]
    best = best_across_rounds(rows, upto=2)
    assert best["a"]["lyrics"] == "a-1-1" and best["a"]["round"] == 1  # round 1 beat round 2: kept
    assert best["b"]["lyrics"] == "b-2-0"
    assert best_across_rounds(rows, upto=3)["a"]["lyrics"] == "a-3-0"


def test_fold_parts_keeps_every_rank_row_once_in_prompt_order(tmp_path):
    """Part files a killed multi-process run left (one torn mid-write) are folded into samples.jsonl: rows it already
    has are not repeated, the rest follow in (round, prompt) order, the torn line is dropped, the parts removed."""
    from lyrictool.train.rejection_sample import fold_parts, part_file, part_files

    def row(pid, rnd=1):
        return {"id": pid, "round": rnd, "candidates": [{"lyrics": f"{pid}-{rnd}", "reward": 0.5}], "best": 0}

    def write(path, rows, torn=""):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + torn, encoding="utf-8")

    samples = tmp_path / "samples.jsonl"
    write(samples, [row("p0")])
    write(part_file(samples, 0), [row("p2"), row("p0"), row("p4")])        # p0: merged before the kill
    write(part_file(samples, 1), [row("p3"), row("p1")], torn='{"id": "p5", "round": 1, "cand')
    write(part_file(samples, 10), [row("p1", 2), row("p1")])               # a 16-process run's rank 10
    (tmp_path / "samples.rankx.jsonl").write_text("not mine\n", encoding="utf-8")  # not a part file
    assert [p.name for p in part_files(samples)] == ["samples.rank0.jsonl", "samples.rank1.jsonl",
                                                     "samples.rank10.jsonl"]
    order = ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert fold_parts(samples, order) == 5
    assert [(r["round"], r["id"]) for r in rows_of(samples)] == [(1, "p0"), (1, "p1"), (1, "p2"), (1, "p3"),
                                                                 (1, "p4"), (2, "p1")]
    assert part_files(samples) == [] and (tmp_path / "samples.rankx.jsonl").exists()
    assert fold_parts(samples, order) == 0 and len(rows_of(samples)) == 6   # nothing left: a no-op
    # a kill between the append and the removal leaves parts whose rows are all in the file already
    write(part_file(samples, 1), [row("p3"), row("p5")])
    assert fold_parts(samples, order) == 1 and [r["id"] for r in rows_of(samples)][-1] == "p5"


def test_rerun_keeps_rows_a_killed_rank_left_in_its_part_file(prompts, write_recipe, tmp_path, capsys):
    """One process picks up a killed multi-process run: rows in part files count as done (not sampled again)."""
    from lyrictool.train.rejection_sample import run_rejection_sample

    out = tmp_path / "rs"
    recipe = load_recipe(write_recipe(recipe_text(prompts, out, k=2)), "rejection-sample")
    run_rejection_sample(recipe)
    samples = out / "samples.jsonl"
    full = rows_of(samples)
    # as if ranks 0 and 1 had written two rows each, rank 1 torn mid-line, and nothing had been merged yet
    samples.unlink()
    (out / "samples.rank0.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in full[:2]),
                                             encoding="utf-8")
    (out / "samples.rank1.jsonl").write_text(json.dumps(full[2], ensure_ascii=False) + "\n" + '{"id": "song", "ro',
                                             encoding="utf-8")
    run_rejection_sample(recipe, dry_run=True)   # counts the parts' rows, changes nothing
    assert "rows already sampled (samples.jsonl and part files): 3" in capsys.readouterr().out
    assert not samples.exists() and len(list(out.glob("samples.rank*"))) == 2
    summary = run_rejection_sample(recipe)
    after = rows_of(samples)
    assert after[:3] == full[:3]                  # the parts' rows kept as they were, in prompt order
    assert sorted(r["id"] for r in after) == ["p0", "p1", "p2", "song"]     # the torn one sampled again, once
    assert summary["metrics"]["rounds"][0]["resumed_rows"] == 3
    assert summary["metrics"]["rounds"][0]["sampling"]["prompts"] == 1
    assert not list(out.glob("samples.rank*"))


def test_killed_midway_then_rerun_has_each_prompt_exactly_once(write_jsonl, write_recipe, tmp_path):
    ids = [f"q{i}" for i in range(10)]
    src = write_jsonl("prompts.jsonl", [{"id": i, "controls": {"topic": "海", "rhyme": "江阳"}} for i in ids])
    out = tmp_path / "rs"
    recipe = write_recipe(recipe_text(src, out, k=2).replace("batch_size: 2", "batch_size: 1"))
    samples = out / "samples.jsonl"
    cmd = [sys.executable, "-m", "lyrictool", "rejection-sample", str(recipe)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and len(rows_of(samples)) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    before = rows_of(samples)
    print(f"killed with {len(before)} of {len(ids)} rows written")
    if len(before) == len(ids):  # finished before we could kill it: cut the file back to an interrupted state
        before = before[:3]
        samples.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in before), encoding="utf-8")
    assert 1 <= len(before) < len(ids)
    with samples.open("a", encoding="utf-8") as f:  # and a line torn mid-write, as a kill can leave it
        f.write('{"id": "q9", "round": 1, "candid')
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    after = rows_of(samples)
    assert sorted(r["id"] for r in after) == sorted(ids)  # each prompt exactly once
    assert after[: len(before)] == before  # nothing already written was lost or redone
    # a third run has nothing left to sample
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 0 and rows_of(samples) == after


def test_bad_inputs_are_one_line_errors(prompts, write_jsonl, write_recipe, tmp_path):
    from lyrictool.train.rejection_sample import run_rejection_sample

    out = tmp_path / "o"
    with pytest.raises(UserError, match=r"sampling.k: Input should be greater than or equal to 1 \(got 0\)"):
        load_recipe(write_recipe(recipe_text(prompts, out, k=0)), "rejection-sample")
    with pytest.raises(UserError, match=r"rounds: 2 needs finetune: true"):
        load_recipe(write_recipe(recipe_text(prompts, out, extra="rounds: 2")), "rejection-sample")
    not_model = tmp_path / "empty"
    not_model.mkdir()
    text = recipe_text(prompts, out).replace("rewards:\n", f"rewards:\n  - {{name: scorer, path: {not_model}}}\n")
    recipe = load_recipe(write_recipe(text), "rejection-sample")
    with pytest.raises(UserError, match=r"recipe.yaml: rewards\[0\].path: .*empty is not a trained scorer"):
        run_rejection_sample(recipe, dry_run=True)
    text = recipe_text(prompts, out).replace("rewards:\n", "rewards:\n  - {name: safety, path: no/such.txt}\n")
    with pytest.raises(UserError, match=r"recipe.yaml: rewards\[0\].path: blocklist not found: no/such.txt"):
        run_rejection_sample(load_recipe(write_recipe(text), "rejection-sample"), dry_run=True)
    dup = write_jsonl("dup.jsonl", [{"id": "x", "controls": {}}, {"id": "x", "controls": {}}])
    recipe = load_recipe(write_recipe(recipe_text(dup, out)), "rejection-sample")
    with pytest.raises(UserError, match=r"dup.jsonl:2: duplicate id 'x' \(first at .*dup.jsonl:1\)"):
        run_rejection_sample(recipe, dry_run=True)
    bad_controls = write_jsonl("bad.jsonl", [{"controls": {"rhyme": "不是韵"}}])
    recipe = load_recipe(write_recipe(recipe_text(bad_controls, out)), "rejection-sample")
    with pytest.raises(UserError, match=r"bad.jsonl:1: controls.rhyme: unknown rhyme"):
        run_rejection_sample(recipe, dry_run=True)
    out.mkdir()
    (out / "samples.jsonl").write_text('{"id": "p0", "round": 1}\nnot json\n', encoding="utf-8")
    recipe = load_recipe(write_recipe(recipe_text(prompts, out)), "rejection-sample")
    with pytest.raises(UserError, match=r"samples.jsonl:2: not valid JSON"):
        run_rejection_sample(recipe, dry_run=True)


def test_scorer_reward_ranks_candidates(prompts, write_recipe, tmp_path, tiny_model_path):
    """With a scorer in the rewards, every candidate carries its sigmoid score and the total includes it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lyrictool.rewards import sigmoid
    from lyrictool.train.rejection_sample import run_rejection_sample

    scorer = tmp_path / "scorer"
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    m = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    m.config.pad_token_id = tok.pad_token_id
    m.save_pretrained(scorer)
    tok.save_pretrained(scorer)
    text = recipe_text(prompts, tmp_path / "rs", k=2).replace(
        "rewards:\n", f"rewards:\n  - {{name: scorer, path: {scorer}, weight: 3.0}}\n")
    run_rejection_sample(load_recipe(write_recipe(text), "rejection-sample"))
    from lyrictool.rewards import Scorer

    sc = Scorer(scorer)
    row = rows_of(tmp_path / "rs" / "samples.jsonl")[0]
    for c in row["candidates"]:
        assert c["rewards"]["scorer"] == pytest.approx(sigmoid(sc.score([row["controls"]], [c["lyrics"]])[0]),
                                                       abs=1e-4)
    specs = [RewardSpec(name="scorer", path=str(scorer), weight=3.0)] + \
        [RewardSpec(name=n, weight=w) for n, w in (("rhyme", 1.0), ("line_length", 0.5), ("format", 2.0))]
    assert row["candidates"][0]["reward"] == pytest.approx(combine(row["candidates"][0]["rewards"], specs)[0],
                                                           abs=1e-5)


def test_lora_adapter_policy_is_merged_and_rounds_save_full_models(prompts, write_recipe, tmp_path, tiny_model_path):
    """A LoRA `lyrictool sft` output as the policy: merged once, and LoRA SFT on winners saves a plain model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyrictool.train.rejection_sample import run_rejection_sample

    adapter = tmp_path / "sft-lora"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                   LoraConfig(r=2, lora_alpha=4, target_modules="all-linear")).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(adapter)
    out = tmp_path / "rs"
    text = recipe_text(prompts, out, k=2, extra=f"finetune: true\nmodel: {{name: {adapter}, lora: {{r: 2, alpha: 4}}}}")
    summary = run_rejection_sample(load_recipe(write_recipe(text), "rejection-sample"))
    assert summary["metrics"]["rounds"][0]["policy"] == str(out / "policy-merged")
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out)  # loads as a plain model
