"""Rewards: rule rewards, weighting, the LLaMA-2 safety override, the scorer wrapper, TRL reward functions."""

from __future__ import annotations

import json

import pytest

from lyrictool.errors import UserError
from lyrictool.rewards import (
    Rewards,
    RewardSpec,
    Scorer,
    check_reward_specs,
    combine,
    combined,
    reward_funcs,
    rule_rewards,
)

GOOD = "[Verse]\n外婆门前种着花\n篱笆上面爬丝瓜\n炊烟升起在檐下\n小狗追着一群鸭"
BROKEN_RHYME = "[Verse]\n外婆门前种春天\n篱笆上面爬丝瓜\n炊烟升起在檐下\n小狗追着一满阶"
CONTROLS = {"rhyme": "发花", "structure": [{"section": "verse", "lines": 4}], "line_lengths": [7, 7, 7, 7]}


def test_rule_rewards_follow_the_controls():
    good = rule_rewards(GOOD, CONTROLS)
    assert good == {"rhyme": 1.0, "structure": 1.0, "line_length": 1.0, "format": 1.0}
    broken = rule_rewards(BROKEN_RHYME, CONTROLS)
    assert broken["rhyme"] == 0.5  # two of four lines leave 发花
    assert rule_rewards(GOOD, {**CONTROLS, "line_lengths": [7, 7, 5, 5]})["line_length"] == 0.5
    assert rule_rewards(GOOD, {"structure": [{"section": "chorus", "lines": 4}]})["structure"] == 0.0


def test_rule_rewards_without_controls():
    # no rhyme asked: rhyme density; no structure/length asked: nothing to violate, but empty lyrics get 0
    assert rule_rewards(GOOD)["rhyme"] == 1.0
    assert rule_rewards(GOOD)["structure"] == rule_rewards(GOOD)["line_length"] == 1.0
    assert rule_rewards("") == {"rhyme": 0.0, "structure": 0.0, "line_length": 0.0, "format": 0.0}
    # controls as they arrive from a datasets column (absent keys filled with None) or as JSON text
    assert rule_rewards(GOOD, {"rhyme": None, "structure": None, "line_lengths": [7, 7, 7, 7]}) == rule_rewards(GOOD)
    assert rule_rewards(BROKEN_RHYME, json.dumps({"rhyme": "发花"}))["rhyme"] == 0.5


def test_repetition_reward_keeps_a_round_from_choosing_a_looped_rhyming_line():
    looped = "[Verse]\n外婆门前种着花\n外婆门前种着花\n外婆门前种着花\n小狗追着一群鸭"
    assert rule_rewards(looped, CONTROLS)["rhyme"] == rule_rewards(GOOD, CONTROLS)["rhyme"] == 1.0  # rhyme can't tell
    assert rule_rewards(looped, CONTROLS, names=("repetition",)) == {"repetition": 0.5}  # 2 of 4 lines repeat
    assert rule_rewards(GOOD, CONTROLS, names=("repetition",)) == {"repetition": 1.0}
    assert rule_rewards("", names=("repetition",)) == {"repetition": 0.0}
    rewards = Rewards.from_specs([{"name": "rhyme"}, {"name": "repetition"}])
    good, bad = rewards.score([CONTROLS, CONTROLS], [GOOD, looped])
    assert good.total > bad.total
    assert "repetition" not in rule_rewards(GOOD)  # not a default: a chorus sung twice repeats by design


def test_rhyme_reward_accepts_near_rhymes_when_the_recipe_asks():
    near = "吹过一阵风\n又是一年春\n天边的彩虹\n温暖我的心"  # 中东 and 人辰: near rhymes of each other
    assert rule_rewards(near, {"rhyme": "中东"})["rhyme"] == 0.5
    assert rule_rewards(near, {"rhyme": "中东"}, strictness="near")["rhyme"] == 1.0
    rewards = Rewards.from_specs([{"name": "rhyme"}], strictness="near")
    assert rewards.score([{"rhyme": "中东"}], [near])[0].components == {"rhyme": 1.0}
    from lyrictool.recipes import DataSpec

    assert DataSpec(train="builtin:demo-songs").rhyme_strictness == "strict"


def test_weighted_sum():
    specs = [RewardSpec(name="rhyme", weight=2.0), RewardSpec(name="format", weight=0.5)]
    total, overridden = combine({"rhyme": 0.5, "format": 1.0}, specs)
    assert total == pytest.approx(1.5) and not overridden
    scored = combined(specs, [CONTROLS, CONTROLS], [GOOD, BROKEN_RHYME])
    assert [s.total for s in scored] == pytest.approx([2.5, 1.5])
    assert scored[1].components == {"rhyme": 0.5, "format": 1.0}


def test_safety_override_llama2():
    specs = [RewardSpec(name="rhyme", weight=1.0), RewardSpec(name="format", weight=1.0),
             RewardSpec(name="safety", weight=1.0, path="x.txt", override_below=0.15)]
    # safe: helpfulness and safety add up
    assert combine({"rhyme": 1.0, "format": 1.0, "safety": 0.9}, specs) == (pytest.approx(2.9), False)
    # unsafe: the safety reward alone, so perfect rhyme cannot buy it back
    assert combine({"rhyme": 1.0, "format": 1.0, "safety": 0.1}, specs) == (pytest.approx(0.1), True)
    # a safety prompt uses the safety reward even when the answer scores as safe
    assert combine({"rhyme": 1.0, "format": 1.0, "safety": 0.9}, specs, safety_prompt=True) == (0.9, True)
    # without override_below safety is just one more weighted term
    plain = [RewardSpec(name="rhyme"), RewardSpec(name="safety", path="x.txt")]
    assert combine({"rhyme": 1.0, "safety": 0.0}, plain) == (1.0, False)


def test_blocklist_safety_and_safety_prompts(tmp_path):
    bl = tmp_path / "blocklist.txt"
    bl.write_text("# banned terms\n毒品\n\n暴力  # comment\n", encoding="utf-8")
    rewards = Rewards.from_specs([{"name": "rhyme"}, {"name": "safety", "path": str(bl), "override_below": 0.15}])
    bad = GOOD.replace("种着花", "藏毒品")
    safe, unsafe, asked = rewards.score([CONTROLS, CONTROLS, {"topic": "暴力"}], [GOOD, bad, GOOD])
    assert safe.total == 2.0 and not safe.overridden
    assert unsafe.components["safety"] == 0.0 and unsafe.total == 0.0 and unsafe.overridden
    assert asked.overridden and asked.total == 1.0
    assert unsafe.as_dict()["safety_override"] is True


def test_bad_reward_specs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="needs path"):
        RewardSpec(name="scorer")
    with pytest.raises(ValueError, match="safety reward only"):
        RewardSpec(name="rhyme", override_below=0.2)
    with pytest.raises(UserError, match=r"rewards: reward rhyme listed twice"):
        check_reward_specs([RewardSpec(name="rhyme"), RewardSpec(name="rhyme")], where="r.yaml")
    with pytest.raises(UserError, match=r"rewards\[1\].path: blocklist not found"):
        Rewards.from_specs([{"name": "rhyme"}, {"name": "safety", "path": str(tmp_path / "nope.txt")}])
    not_model = tmp_path / "notamodel"
    not_model.mkdir()
    with pytest.raises(UserError, match=r"rewards\[0\].path: .*notamodel is not a trained scorer \(no config.json\)"):
        Rewards.from_specs([{"name": "scorer", "path": str(not_model)}])
    with pytest.raises(UserError, match=r"is not a trained scorer \(no such folder\)"):
        Scorer(tmp_path / "missing", key="rewards[0].path")


def test_causal_lm_is_not_a_scorer(tiny_model_path):
    with pytest.raises(UserError, match=r"rewards\[0\].path: .* is a LlamaForCausalLM \(not a scorer"):
        Rewards.from_specs([{"name": "scorer", "path": str(tiny_model_path)}])


@pytest.fixture(scope="module")
def untrained_scorer(tiny_model_path, tmp_path_factory):
    """A seq-cls head on the tiny model, saved the way `lyrictool score` saves (enough to test the plumbing)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("scorer")
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_scorer_batches_like_one_by_one_and_formats_like_training(untrained_scorer):
    from trl.data_utils import _tokenize

    from lyrictool.controls import build_messages

    scorer = Scorer(untrained_scorer, batch_size=3)
    lyrics = [GOOD, BROKEN_RHYME, "短", GOOD + "\n多一行"]
    batched = scorer.score([CONTROLS] * 4, lyrics)
    single = [Scorer(untrained_scorer, batch_size=1).score([CONTROLS], [t])[0] for t in lyrics]
    assert batched == pytest.approx(single, abs=1e-4)  # right padding does not change a score
    # the same token ids TRL's RewardTrainer builds from a conversational prompt + chosen row
    row = build_messages(CONTROLS, GOOD)
    assert scorer.encode(CONTROLS, GOOD) == _tokenize(scorer.tokenizer, row["prompt"] + row["completion"])["input_ids"]


def test_trl_reward_funcs_log_components_and_apply_override(tmp_path, untrained_scorer):
    bl = tmp_path / "bl.txt"
    bl.write_text("毒品\n", encoding="utf-8")
    specs = [RewardSpec(name="scorer", path=str(untrained_scorer), weight=0.5), RewardSpec(name="rhyme"),
             RewardSpec(name="safety", path=str(bl), override_below=0.15)]
    funcs, weights = reward_funcs(specs)
    assert [f.__name__ for f in funcs] == ["scorer", "rhyme", "safety", "total"]
    assert weights == [0.0, 0.0, 0.0, 1.0]
    completions = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": "毒品\n" + GOOD}]]
    prompts = [[{"role": "user", "content": "x"}]] * 2
    cols = {"controls": [CONTROLS, CONTROLS]}
    by_name = {f.__name__: f(prompts=prompts, completions=completions, **cols) for f in funcs}
    assert by_name["rhyme"][0] == 1.0 and by_name["safety"] == [1.0, 0.0]
    assert 0.0 < by_name["scorer"][0] < 1.0
    assert by_name["total"][0] == pytest.approx(0.5 * by_name["scorer"][0] + 1.0 + 1.0)
    assert by_name["total"][1] == 0.0  # overridden by safety
