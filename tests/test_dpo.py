"""`lyrictool dpo`: pairs from preference rows, ratings and rejection-sampling output; DPO raises the margin."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_cli

from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe

GOOD = ["月光洒满小村庄\n晚风吹过稻花香", "夏天的风轻轻吹\n蝉声一阵一阵飞", "海浪拍打着沙滩\n白帆飘向那天边",
        "春雨落在青石板\n燕子飞回旧屋檐"]
BAD = ["月光洒满小村庄\n月光洒满小村庄", "夏天的风轻轻吹\n我们去吃冰淇淋", "海浪拍打着沙滩\n电脑键盘坏掉了",
       "春雨落在青石板\n春雨落在青石板"]
TOPICS = ["故乡", "夏天", "大海", "春天"]
DEMO_SONGS = REPO / "lyrictool" / "data" / "demo" / "songs.jsonl"


def recipe_text(train: str, out, *, steps: int = 8, extra: str = "") -> str:
    return f"""
model: {{name: builtin:tiny-zh}}
data: {{train: {train}}}
train:
  beta: 0.1
  learning_rate: 5.0e-3
  max_steps: {steps}
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 8
  max_length: 96
  activation_checkpointing: false
margin_pairs: 8
output_dir: {out}
{extra}
"""


@pytest.fixture()
def preferences(write_jsonl):
    rows = [{"controls": {"topic": t, "genre": "民谣"}, "chosen": g, "rejected": b}
            for t, g, b in zip(TOPICS, GOOD, BAD)]
    return write_jsonl("prefs.jsonl", rows + [{"prompt": "写一首关于月亮的歌", "chosen": GOOD[0], "rejected": BAD[1]}])


def lyric_lines(n: int) -> list[list[str]]:
    """The first two sung lines of the first ``n`` demo songs."""
    rows = [json.loads(line) for line in DEMO_SONGS.read_text(encoding="utf-8").splitlines()[:n]]
    return [[ln for ln in r["lyrics"].splitlines() if ln and not ln.startswith("[")][:2] for r in rows]


@pytest.mark.parametrize("precompute", [False, True], ids=["frozen-copy", "precomputed-reference"])
def test_dpo_cli_learns_a_preference_that_holds_on_held_out_pairs(write_jsonl, tmp_path, precompute):
    # Rejected = the same lines, each ending in 啦: a rule, not a memorised pair, so it can carry to prompts that
    # were held out. The margin is measured on those held-out pairs, which the policy never trained on.
    pairs = [{"controls": {"topic": f"t{i}"}, "chosen": "\n".join(lines),
              "rejected": "\n".join(ln[:-1] + "啦" for ln in lines)} for i, lines in enumerate(lyric_lines(24))]
    data = write_jsonl("prefs.jsonl", pairs)
    out = tmp_path / "dpo"
    r = run_cli("dpo", str(REPO / "recipes" / "tiny" / "dpo.yaml"), "--set", f"data.train={data}",
                "--set", "data.eval_fraction=0.25", "--set", f"output_dir={out}", "--set", "train.max_steps=6",
                "--set", "train.learning_rate=5e-3", "--set", "train.per_device_train_batch_size=6",
                "--set", "train.max_length=64", "--set", "margin_pairs=0",
                "--set", f"train.precompute_ref_log_probs={str(precompute).lower()}")
    assert r.returncode == 0, r.stderr[-3000:]
    written = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    held = written["metrics"]["logprob_margin"]["heldout"]
    assert written["command"] == "dpo" and written["data"]["pairs_eval"] == 6
    assert held["after"]["margin"] > held["before"]["margin"] + 1.0, held
    assert held["after"]["reward_accuracy"] >= 5 / 6, held
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert written["model"]["reference"] == ("precomputed from the starting model" if precompute else "frozen copy")
    assert written["metrics"]["global_step"] == 6 and written["metrics"]["eval"]["loss"] is not None


def test_dpo_with_lora_uses_the_disabled_adapter_as_reference(preferences, write_recipe, tmp_path):
    from lyrictool.train.dpo import run_dpo

    out = tmp_path / "dpo-lora"
    text = recipe_text(str(preferences), out, steps=2).replace("model: {name: builtin:tiny-zh}",
                                                               "model: {name: builtin:tiny-zh, lora: {r: 4}}")
    summary = run_dpo(load_recipe(write_recipe(text), "dpo", ["margin_pairs=0"]))
    assert summary["model"]["reference"] == "adapter disabled"
    assert (out / "adapter_config.json").exists()
    assert summary["metrics"]["global_step"] == 2


def test_ratings_become_pairs_higher_rating_chosen(write_jsonl, write_recipe, tmp_path):
    from lyrictool.train.dpo import build_datasets

    rows = [{"controls": {"topic": "故乡"}, "lyrics": GOOD[0], "ratings": {"language": 5, "genre": 4, "content": 5}},
            {"controls": {"topic": "故乡"}, "lyrics": BAD[0], "ratings": {"language": 2, "genre": 4, "content": 2}},
            {"controls": {"topic": "故乡"}, "lyrics": BAD[1], "ratings": {"language": 3, "genre": 4, "content": 3}},
            {"controls": {"topic": "夏天"}, "lyrics": GOOD[1], "ratings": {"language": 4, "genre": 4, "content": 4}}]
    data = write_jsonl("ratings.jsonl", rows)
    recipe = load_recipe(write_recipe(recipe_text(str(data), tmp_path / "o")), "dpo")
    train, held, stats = build_datasets(recipe)
    # 故乡 has three rated lyrics -> three ordered pairs; 夏天 has one lyric -> none
    assert len(train) == 3 and not held and stats["ratings_rows"] == 4
    by_pair = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in train}
    assert by_pair == {(GOOD[0], BAD[0]), (GOOD[0], BAD[1]), (BAD[1], BAD[0])}
    row = train[0]
    assert row["prompt"][0]["role"] == "user" and "主题：故乡" in row["prompt"][0]["content"]
    assert row["chosen"][0]["role"] == "assistant"


def test_rejection_sampling_output_gives_best_vs_worst_and_drops_ties(write_jsonl, write_recipe, tmp_path):
    from lyrictool.train.dpo import build_datasets

    def rs_row(i, texts, rewards):
        best, worst = rewards.index(max(rewards)), rewards.index(min(rewards))
        return {"id": f"p{i}", "round": 1, "controls": {"topic": TOPICS[i]}, "prompt": "ignored",
                "candidates": [{"lyrics": t, "reward": r, "rewards": {"rhyme": r}} for t, r in zip(texts, rewards)],
                "best": best, "worst": worst, "chosen": texts[best], "rejected": texts[worst],
                "reward_gap": max(rewards) - min(rewards)}

    rows = [rs_row(0, [BAD[0], GOOD[0]], [0.1, 0.9]), rs_row(1, [GOOD[1], GOOD[1]], [0.5, 0.5])]
    data = write_jsonl("samples.jsonl", rows)
    recipe = load_recipe(write_recipe(recipe_text(str(data), tmp_path / "o")), "dpo")
    train, _, stats = build_datasets(recipe)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in train] == [(GOOD[0], BAD[0])]
    assert stats["identical_pairs_dropped"] == 1


def test_hints_are_written_into_both_sides(preferences, write_recipe, tmp_path):
    from lyrictool.lyrics import has_hints, strip_hints
    from lyrictool.train.dpo import build_datasets

    recipe = load_recipe(write_recipe(recipe_text(str(preferences), tmp_path / "o")), "dpo",
                         ["data.hints=line_end"])
    train, _, _ = build_datasets(recipe)
    for row in train:
        for side in ("chosen", "rejected"):
            text = row[side][0]["content"]
            assert has_hints(text)
            assert strip_hints(text).strip() in GOOD + BAD


def test_ratings_row_without_ratings_is_a_one_line_error(write_jsonl, write_recipe, tmp_path):
    data = write_jsonl("ratings.jsonl", [
        {"controls": {"topic": "故乡"}, "lyrics": GOOD[0], "ratings": {"language": 5, "genre": 4, "content": 5}},
        {"controls": {"topic": "故乡"}, "lyrics": BAD[0]},
    ])
    recipe = write_recipe(recipe_text(str(data), tmp_path / "o"))
    r = run_cli("dpo", str(recipe), "--dry-run")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert f"{data}:2:" in err and "ratings" in err


def test_unknown_dpo_key_and_all_ties_are_user_errors(write_jsonl, write_recipe, tmp_path):
    from lyrictool.train.dpo import build_datasets

    data = write_jsonl("prefs.jsonl", [{"controls": {"topic": "故乡"}, "chosen": GOOD[0], "rejected": BAD[0]}])
    with pytest.raises(UserError, match=r"train\.betta: unknown key for DPOConfig; did you mean beta"):
        load_recipe(write_recipe(recipe_text(str(data), tmp_path / "o")), "dpo", ["train.betta=0.1"])
    ties = write_jsonl("ties.jsonl", [{"controls": {"topic": "故乡"}, "chosen": GOOD[0], "rejected": GOOD[0]}])
    with pytest.raises(UserError, match="identical chosen and rejected"):
        build_datasets(load_recipe(write_recipe(recipe_text(str(ties), tmp_path / "o"), "r2.yaml"), "dpo"))
