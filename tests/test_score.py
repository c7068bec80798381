"""`lyrictool score`: ratings -> pairs with margins, the scorer learns a separable rating set, --predict, errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from lyrictool.data import Record
from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
SONGS = [json.loads(line) for line in (REPO / "lyrictool/data/demo/songs.jsonl").read_text("utf-8").splitlines()]


def recipe_text(train: str, out: Path, **extra: str) -> str:
    lines = [f"data: {{train: {train}, eval_fraction: 0.25}}", f"output_dir: {out}",
             ("train: {max_steps: 30, learning_rate: 2.0e-3, per_device_train_batch_size: 8, max_length: 256, "
              "activation_checkpointing: false}")]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def separable_ratings(n_songs: int) -> list[dict]:
    """Per song: the song (5), a half-mumbled copy (3) and a fully mumbled one (1): a rule a scorer can learn."""
    rows = []
    for song in SONGS[:n_songs]:
        lines = song["lyrics"].split("\n")
        mumble = ["嗯" * len(x) if x and not x.startswith("[") else x for x in lines]
        half = [m if i % 2 else x for i, (x, m) in enumerate(zip(lines, mumble))]
        for text, r in ((song["lyrics"], 5), ("\n".join(half), 3), ("\n".join(mumble), 1)):
            rows.append({"controls": song["controls"], "lyrics": text,
                         "ratings": {"language": r, "genre": r, "content": r}})
    return rows


def test_pairs_within_a_prompt_with_rating_gap_margins(write_recipe, tmp_path):
    from lyrictool.data.pairs import build_pairs

    recipe = load_recipe(write_recipe(recipe_text("builtin:demo-ratings", tmp_path / "o",
                                                  aspects="{language: 3.0, content: 1.0}", margin_scale=0.5)),
                         "score")
    a, b = {"topic": "海"}, {"topic": "山"}
    recs = [Record("f:1", {"controls": a, "lyrics": "甲", "ratings": {"language": 5, "content": 1}}),   # 4.0
            Record("f:2", {"controls": a, "lyrics": "乙", "ratings": {"language": 2, "content": 2}}),   # 2.0
            Record("f:3", {"controls": b, "lyrics": "丙", "ratings": {"language": 1, "content": 1}}),   # alone
            Record("f:4", {"prompt": "写海", "chosen": "丁", "rejected": "戊"})]
    groups, n_ratings = build_pairs(recs, aspects=recipe.aspects, margin_scale=recipe.margin_scale)
    assert n_ratings == 3
    pairs = [p for g in groups for p in g]
    rated = [p for p in pairs if p.chosen == "甲"]
    assert len(rated) == 1 and rated[0].rejected == "乙" and rated[0].margin == pytest.approx(0.5 * 2.0)
    pref = next(p for p in pairs if p.chosen == "丁")
    assert pref.margin == 0.0 and pref.prompt == [{"role": "user", "content": "写海"}]
    assert not any(p.chosen == "丙" or p.rejected == "丙" for p in pairs)  # a prompt with one rating has no pair
    assert rated[0].as_row(True)["margin"] == pytest.approx(1.0)


def test_score_cli_learns_separable_ratings_then_predict_ranks_an_unseen_song(write_recipe, write_jsonl, tmp_path):
    from conftest import run_cli

    from lyrictool.rewards import Rewards

    data = write_jsonl("ratings.jsonl", separable_ratings(24))
    out = tmp_path / "scorer"
    recipe = write_recipe(recipe_text(str(data), out))
    r = run_cli("score", str(recipe))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    m = summary["metrics"]
    assert summary["command"] == "score"
    assert summary["data"]["prompts_eval"] == 6 and summary["data"]["pairs_eval"] == 18
    assert m["pairwise_accuracy"] > 0.9, m  # on the 6 held-out prompts
    # the saved folder is a scorer the rewards module loads, and it ranks an unseen song above its mumble
    song = SONGS[-1]
    mumble = "\n".join("嗯" * len(x) if x and not x.startswith("[") else x for x in song["lyrics"].split("\n"))
    rewards = Rewards.from_specs([{"name": "scorer", "path": str(out)}])
    good, bad = rewards.score([song["controls"]] * 2, [song["lyrics"], mumble])
    assert good.total > bad.total

    # --predict through the CLI adds the same score to every row, in input order
    rows = [{"id": "a", "controls": song["controls"], "lyrics": mumble},
            {"id": "b", "controls": song["controls"], "lyrics": song["lyrics"]}]
    src = write_jsonl("to_score.jsonl", rows)
    dst = tmp_path / "scored.jsonl"
    r = run_cli("score", str(recipe), "--predict", str(src), "--output", str(dst))
    assert r.returncode == 0, r.stderr[-3000:]
    scored = [json.loads(x) for x in dst.read_text("utf-8").splitlines()]
    assert [row["id"] for row in scored] == ["a", "b"] and scored[0]["lyrics"] == mumble
    assert scored[1]["score"] > scored[0]["score"]
    # the raw head logit; the scorer reward is its sigmoid
    assert [1 / (1 + math.exp(-row["score"])) for row in scored] == pytest.approx([bad.total, good.total], abs=1e-4)


@pytest.mark.parametrize("row, message", [
    ({"controls": {"topic": "海"}, "lyrics": "海浪"}, r"ratings.jsonl:2: ratings row without 'ratings'"),
    ({"controls": {"topic": "海"}, "lyrics": "海浪", "ratings": {"language": 4}},
     r"ratings.jsonl:2: ratings has no 'genre' \(has language\)"),
    ({"controls": {"topic": "海"}, "lyrics": "海浪", "ratings": {"language": "good", "genre": 1, "content": 1}},
     r"ratings.jsonl:2: ratings.language must be a number"),
    ({"controls": {"topic": "海"}, "text": "海浪"}, r"ratings.jsonl:2: neither a ratings row"),
    ({"controls": {"topic": "海"}, "chosen": "海浪", "rejected": ""}, r"ratings.jsonl:2: 'rejected' must be non-empty"),
])
def test_bad_rows_are_one_line_errors(write_recipe, write_jsonl, tmp_path, row, message):
    from lyrictool.train.score import run_score

    ok = {"controls": {"topic": "海"}, "lyrics": "海鸥", "ratings": {"language": 4, "genre": 4, "content": 4}}
    data = write_jsonl("ratings.jsonl", [ok, row])
    recipe = load_recipe(write_recipe(recipe_text(str(data), tmp_path / "o")), "score")
    with pytest.raises(UserError, match=message) as e:
        run_score(recipe, dry_run=True)
    assert "\n" not in str(e.value)


def test_cli_errors_name_the_key(write_recipe, write_jsonl, tmp_path):
    import subprocess

    data = write_jsonl("r.jsonl", separable_ratings(2))
    recipe = write_recipe(recipe_text(str(data), tmp_path / "never-trained"))
    res = subprocess.run([sys.executable, "-m", "lyrictool", "score", str(recipe), "--predict", str(data),
                          "--output", str(tmp_path / "x.jsonl")], capture_output=True, text=True, cwd=REPO, check=False)
    assert res.returncode == 2
    assert "output_dir: " in res.stderr and "is not a trained scorer (no such folder)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run([sys.executable, "-m", "lyrictool", "score", str(recipe), "--set", "aspects={}",
                          "--dry-run"], capture_output=True, text=True, cwd=REPO, check=False)
    assert res.returncode == 2 and "aspects: name at least one rated aspect" in res.stderr


def test_tiny_recipe_dry_run_on_demo_ratings():
    from lyrictool.data.pairs import load_pairs

    recipe = load_recipe(REPO / "recipes/tiny/score.yaml", "score")
    train, held, stats = load_pairs(recipe.data, seed=recipe.seed, where="score.yaml", aspects=recipe.aspects,
                                    margin_scale=recipe.margin_scale)
    assert stats["ratings_rows"] >= 100 and stats["prompts_eval"] >= 5
    train_prompts = {json.dumps(p.prompt, ensure_ascii=False) for p in train}
    assert not any(json.dumps(p.prompt, ensure_ascii=False) in train_prompts for p in held)  # split by prompt
    assert all(p.margin > 0 for p in train)
