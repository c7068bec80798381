"""Lyrics rows -> SFT rows: the prompt template, derived and dropped controls, per-row problems, hints."""

from __future__ import annotations

import random

import pytest
from conftest import SHARED_DATA

from lyrictool.controls import Controls, build_messages, build_prompt, derive_controls
from lyrictool.data import Record
from lyrictool.data.lyrics_rows import (
    RowStats,
    load_lyrics_examples,
    lyrics_example,
    prompt_controls,
    sft_rows,
)
from lyrictool.errors import UserError
from lyrictool.lyrics import has_hints, strip_hints
from lyrictool.recipes import DataSpec

SONG = "[Verse]\n月光洒满小村庄\n晚风吹过稻花香\n\n[Chorus]\n我在远方想故乡\n梦里回到老地方"


def example(lyrics=SONG, controls=None, where="songs.jsonl:1"):
    return lyrics_example(Record(where, {"lyrics": lyrics, "controls": controls or {}}))


def test_prompt_template_states_every_control_in_readable_chinese():
    c = Controls(genre="民谣", topic="故乡", title="月光", rhyme="ang", scheme="AAXA",
                 structure=[{"section": "verse", "lines": 2}, {"section": "副歌", "lines": 2}], line_lengths=[7, 7, 7, 7])
    assert build_prompt(c) == ("请写一首中文歌词。\n风格：民谣\n标题：月光\n主题：故乡\n押韵：江阳辙\n韵式：AAXA\n"
                               "结构：主歌2行，副歌2行\n每行字数：7、7、7、7")
    assert build_prompt(None) == "请写一首中文歌词。"
    row = build_messages({"rhyme": "江阳"}, "歌词")
    assert row == {"prompt": [{"role": "user", "content": "请写一首中文歌词。\n押韵：江阳辙"}],
                   "completion": [{"role": "assistant", "content": "歌词"}]}


def test_derived_controls_read_structure_lengths_and_dominant_rhyme():
    d = derive_controls(SONG, ["structure", "line_lengths", "rhyme", "scheme"])
    assert d == {"structure": [{"section": "verse", "lines": 2}, {"section": "chorus", "lines": 2}],
                 "line_lengths": [7, 7, 7, 7], "rhyme": "江阳", "scheme": "AAAA"}
    # no group covers half of the lines: no rhyme is claimed for the song
    assert "rhyme" not in derive_controls("春风吹\n花儿开\n月亮圆\n星星亮", ["rhyme"])


def test_scheme_control_per_section():
    verse_chorus = [{"section": "verse", "lines": 4}, {"section": "chorus", "lines": 4}]
    assert Controls(scheme="aabb / abab").scheme == "AABB|ABAB"
    assert Controls(scheme="AABB|ABAB", structure=verse_chorus).n_lines == 8
    assert Controls(scheme="AABB", structure=verse_chorus).scheme == "AABB"  # the same pattern for each section
    assert Controls(scheme="AABB", line_lengths=[7] * 8).scheme == "AABB"  # repeated every four lines
    for bad in ({"scheme": "AABB|AB", "structure": verse_chorus}, {"scheme": "AABBCC", "line_lengths": [7] * 8},
                {"scheme": "AA||BB"}):
        with pytest.raises(ValueError, match="contradictory|capital letter"):
            Controls.model_validate(bad)
    assert "韵式：AABB|ABAB" in build_prompt({"scheme": "AABB|ABAB"})


def test_recipe_chooses_stated_and_derived_controls_and_counts_missing_ones():
    spec = DataSpec(train="builtin:demo-songs", controls=["genre", "rhyme", "line_lengths"], derive=["rhyme"])
    stats = RowStats()
    c = prompt_controls(example(controls={"genre": "民谣", "topic": "故乡"}), spec, random.Random(0), stats)
    assert c.to_dict() == {"genre": "民谣", "rhyme": "江阳"}  # topic not asked for; line_lengths not derived
    assert stats.missing == {"line_lengths": 1} and stats.stated == {"genre": 1, "rhyme": 1}
    c = prompt_controls(example(controls={}), spec, random.Random(0), stats)
    assert c.to_dict() == {"rhyme": "江阳"} and stats.missing["genre"] == 1


def test_control_dropout_trains_on_many_subsets_of_controls():
    spec = DataSpec(train="builtin:demo-songs", controls=["genre", "topic", "rhyme", "line_lengths"],
                    control_dropout=0.5)
    ex = example(controls={"genre": "民谣", "topic": "故乡"})
    rng = random.Random(3)
    subsets = {tuple(sorted(prompt_controls(ex, spec, rng).to_dict())) for _ in range(200)}
    assert len(subsets) >= 12  # of the 16 possible subsets
    full = prompt_controls(ex, spec.model_copy(update={"control_dropout": 0.0}), rng)
    assert set(full.to_dict()) == {"genre", "topic", "rhyme", "line_lengths"}


def test_contradictory_controls_are_reported_with_the_row(write_jsonl):
    path = write_jsonl("songs.jsonl", [{"lyrics": SONG}, {"lyrics": SONG, "controls": {"line_lengths": [7, 7, 7]}}])
    with pytest.raises(UserError, match=rf"^{path}:2: controls ask for 3 lines but the lyrics have 4"):
        load_lyrics_examples(DataSpec(train=str(path)), seed=0)
    path = write_jsonl("songs2.jsonl", [{"lyrics": SONG, "controls": {"scheme": "AABB", "line_lengths": [7, 7]}}])
    with pytest.raises(UserError, match=rf"^{path}:1: controls: contradictory controls"):
        load_lyrics_examples(DataSpec(train=str(path)), seed=0)
    path = write_jsonl("songs3.jsonl", [{"lyrics": SONG, "controls": {"rhyme": "火星"}}])
    with pytest.raises(UserError, match=rf"^{path}:1: controls.rhyme: unknown rhyme"):
        load_lyrics_examples(DataSpec(train=str(path)), seed=0)


def test_lyrics_that_already_carry_hints_are_refused_when_hints_are_added(write_jsonl):
    path = write_jsonl("songs.jsonl", [{"lyrics": "月光洒满小村〔江阳〕庄"}])
    with pytest.raises(UserError, match=rf"^{path}:1: lyrics already contain hint markers"):
        load_lyrics_examples(DataSpec(train=str(path), hints="line_end"), seed=0)


@pytest.mark.skipif(not (SHARED_DATA / "songci").exists(), reason="shared chinese-poetry data not present")
@pytest.mark.parametrize("hints", ["line_end", "line_start"])
def test_training_targets_with_hints_strip_back_to_the_songci_songs(hints):
    from lyrictool.data.convert import iter_chinese_poetry

    examples = [example(row["lyrics"], row["controls"], where)
                for row, where in iter_chinese_poetry(SHARED_DATA / "songci" / "ci.song.1000.json") if row]
    rows = sft_rows(examples, DataSpec(train="builtin:demo-songs", hints=hints, controls=["title", "rhyme"]))
    assert len(rows) == len(examples) > 900
    hinted = 0
    for ex, row in zip(examples, rows):
        target = row["completion"][0]["content"]
        assert strip_hints(target) == ex.lyrics.strip()
        hinted += has_hints(target)
        assert row["prompt"][0]["content"].startswith("请写一首中文歌词。\n标题：")
    assert hinted == len(rows)


def test_derived_rhyme_breaks_ties_the_same_way_in_every_process():
    import subprocess
    import sys

    song = "月亮圆\n星星亮\n又一年\n来日长"  # 言前 2, 江阳 2: a tie
    code = ("from lyrictool.controls import derive_controls; "
            f"print(derive_controls({song!r}, ['rhyme']).get('rhyme'))")
    seen = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout.strip() for seed in range(6)}
    assert seen == {"江阳"}
