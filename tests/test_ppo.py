"""`lyrictool ppo`: GRPO/RLOO on the tiny model raise a learnable rule reward and log every reward component."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe

TOPICS = ["故乡", "夏天", "大海", "春天"]


def recipe_text(train: str, out, *, rewards: str = "[{name: rhyme}]", steps: int = 12, extra: str = "",
                train_extra: str = "") -> str:
    return f"""
model: {{name: builtin:tiny-zh}}
data: {{train: {train}}}
rewards: {rewards}
train:
  beta: 0.0
  num_generations: 8
  max_completion_length: 4
  per_device_train_batch_size: 8
  learning_rate: 3.0e-2
  max_steps: {steps}
  activation_checkpointing: false
{train_extra}
eval_generation: {{num_prompts: 0}}
output_dir: {out}
{extra}
"""


@pytest.fixture()
def jiangyang_prompts(write_jsonl):
    """Prompt rows asking for 江阳 rhymes: the rhyme reward is 1 when the (one-line) sample ends in 江阳."""
    return write_jsonl("prompts.jsonl", [{"controls": {"rhyme": "江阳", "topic": t}} for t in TOPICS])


def test_grpo_cli_raises_a_learnable_rule_reward(jiangyang_prompts, write_recipe, tmp_path):
    out = tmp_path / "ppo"
    recipe = write_recipe(recipe_text(str(jiangyang_prompts), out, rewards="[{name: rhyme, weight: 2.0}]"))
    r = run_cli("ppo", str(recipe))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    curve = summary["reward_curves"]["rhyme"]
    assert len(curve) == 12  # the component's batch mean, logged every step
    first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    # the random-init model ends a 4-character sample in 江阳 by chance about 1 time in 10
    assert first < 0.5 and last > first + 0.3, curve
    # the total is the weighted component: the recipe's weight reaches the trainer
    assert summary["reward_curves"]["total"] == pytest.approx([2.0 * c for c in curve], abs=1e-5)
    assert summary["command"] == "ppo" and summary["metrics"]["algorithm"] == "grpo"
    assert (out / "config.json").exists()


def test_rloo_logs_each_component_and_the_safety_override(jiangyang_prompts, write_recipe, tmp_path):
    from lyrictool.train.ppo import run_ppo

    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# test terms\n炸弹\n", encoding="utf-8")
    rewards = (f"[{{name: rhyme, weight: 1.0}}, {{name: format, weight: 0.5}}, "
               f"{{name: safety, weight: 1.0, path: {blocklist}, override_below: 0.5}}]")
    out = tmp_path / "rloo"
    text = recipe_text(str(jiangyang_prompts), out, rewards=rewards, steps=2,
                       extra="algorithm: rloo\neval_generation: {num_prompts: 2, max_new_tokens: 8}")
    text = text.replace("eval_generation: {num_prompts: 0}\n", "")
    summary = run_ppo(load_recipe(write_recipe(text), "ppo"))
    curves = summary["reward_curves"]
    assert set(curves) == {"rhyme", "format", "safety", "total"}
    assert all(len(v) == 2 for v in curves.values())
    # no banned term in random characters: no override, the total is the weighted sum of the components
    for r, f, s, t in zip(curves["rhyme"], curves["format"], curves["safety"], curves["total"]):
        assert t == pytest.approx(1.0 * r + 0.5 * f + 1.0 * s, abs=1e-5)
    gen = summary["metrics"]["generation"]
    assert set(gen) == {"before", "after"} and set(gen["after"]["rewards"]) == {"rhyme", "format", "safety"}
    assert summary["metrics"]["algorithm"] == "rloo"


def test_reward_functions_read_controls_from_the_prompt_rows(jiangyang_prompts, write_recipe, tmp_path):
    """The rows ppo builds carry controls the TRL reward functions read back (and the override applies)."""
    from lyrictool import rewards as rw
    from lyrictool.train.ppo import prompt_rows

    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("炸弹\n", encoding="utf-8")
    recipe = load_recipe(write_recipe(recipe_text(
        str(jiangyang_prompts), tmp_path / "o",
        rewards=f"[{{name: rhyme}}, {{name: safety, path: {blocklist}, override_below: 0.5}}]")), "ppo")
    train, held = prompt_rows(recipe)
    assert len(train) == 4 and not held
    assert "押韵：江阳辙" in train[0]["prompt"][0]["content"]
    funcs, weights = rw.reward_funcs(rw.Rewards.from_specs(recipe.rewards))
    names = [f.__name__ for f in funcs]
    assert names == ["rhyme", "safety", "total"] and weights == [0.0, 0.0, 1.0]
    completions = [[{"role": "assistant", "content": "月光照在小村庄"}],   # ends in 江阳
                   [{"role": "assistant", "content": "夏天的风轻轻吹"}],   # does not
                   [{"role": "assistant", "content": "炸弹落在小村庄"}]]   # rhymes, but banned
    controls = [train[0]["controls"]] * 3
    values = {f.__name__: f(prompts=[train[0]["prompt"]] * 3, completions=completions, controls=controls)
              for f in funcs}
    assert values["rhyme"] == [1.0, 0.0, 1.0]
    assert values["safety"] == [1.0, 1.0, 0.0]
    assert values["total"] == [2.0, 1.0, 0.0]  # safety below 0.5 overrides the rhyme reward


def test_prompts_from_lyrics_rows_derive_controls(songs_file, write_recipe, tmp_path):
    from lyrictool.train.ppo import prompt_rows

    recipe = load_recipe(write_recipe(recipe_text(str(songs_file), tmp_path / "o")), "ppo",
                         ["data.eval_fraction=0.25"])
    train, held = prompt_rows(recipe)
    assert len(train) == 18 and len(held) == 6
    controls = json.loads(train[0]["controls"])
    assert controls["structure"] == [{"section": "verse", "lines": 2}, {"section": "chorus", "lines": 2}]
    assert controls["line_lengths"] == [7, 7, 7, 7]


def test_bad_prompt_row_and_bad_recipes_are_one_line_errors(write_jsonl, write_recipe, tmp_path,
                                                            jiangyang_prompts):
    from lyrictool.train.ppo import prompt_rows

    bad = write_jsonl("bad.jsonl", [{"controls": {"topic": "故乡"}}, {"title": "no controls"}])
    with pytest.raises(UserError, match=rf"{bad}:2: a prompt row needs 'controls'"):
        prompt_rows(load_recipe(write_recipe(recipe_text(str(bad), tmp_path / "o")), "ppo"))
    with pytest.raises(UserError, match="num_generations: needs at least 2"):
        load_recipe(write_recipe(recipe_text(str(jiangyang_prompts), tmp_path / "o")), "ppo",
                    ["train.num_generations=1"])
    with pytest.raises(UserError, match="reward_weights: give each reward its weight in the rewards list"):
        load_recipe(write_recipe(recipe_text(str(jiangyang_prompts), tmp_path / "o")), "ppo",
                    ["train.reward_weights=[1.0]"])
    # train keys are checked against the chosen algorithm's TRL config
    with pytest.raises(UserError, match="train.normalize_advantages: unknown key for GRPOConfig"):
        load_recipe(write_recipe(recipe_text(str(jiangyang_prompts), tmp_path / "o")), "ppo",
                    ["train.normalize_advantages=true"])
    rloo = load_recipe(write_recipe(recipe_text(str(jiangyang_prompts), tmp_path / "o")), "ppo",
                       ["algorithm=rloo", "train.normalize_advantages=true"])
    assert rloo.train["normalize_advantages"] is True


def test_scorer_path_that_is_not_a_model_is_a_one_line_error(jiangyang_prompts, write_recipe, tmp_path):
    not_a_model = tmp_path / "empty-dir"
    not_a_model.mkdir()
    recipe = write_recipe(recipe_text(str(jiangyang_prompts), tmp_path / "o",
                                      rewards=f"[{{name: scorer, path: {not_a_model}}}, {{name: rhyme}}]"))
    r = run_cli("ppo", str(recipe), "--dry-run")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "rewards[0].path" in err and "not a trained scorer" in err
    ok = run_cli("ppo", str(recipe), "--dry-run", "--set", "rewards=[{name: rhyme}]")
    assert ok.returncode == 0, ok.stderr
    assert "GRPOTrainer" in ok.stdout and "train prompts: 4" in ok.stdout
