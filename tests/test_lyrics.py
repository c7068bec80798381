"""The lyrics document: sections, parse/render round trip, phonetic hints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyrictool.errors import UserError
from lyrictool.lyrics import (
    HINT_MODES,
    SECTION_NAMES,
    Lyrics,
    Section,
    add_hints,
    canonical_section,
    has_hints,
    parse,
    render,
    strip_hints,
)

ROOT = Path(__file__).resolve().parents[1]
SONGCI = ROOT / ".." / "shared" / "data" / "chinese-poetry" / "songci"

SONG = """[Verse 1]
月光洒满窗
思念我的故乡

[Pre-Chorus]
风吹过山岗

[Chorus]
花儿开了
I love you

[Bridge]
夜路漫长

[Outro]
再见"""


@pytest.mark.parametrize(
    "tag, name",
    [
        ("[Verse 1]", "verse"),
        ("[verse]", "verse"),
        ("[Pre-Chorus]", "pre-chorus"),
        ("[Prechorus]", "pre-chorus"),
        ("[Chorus x2]", "chorus"),
        ("[Bridge]", "bridge"),
        ("[Outro]", "outro"),
        ("[Intro]", "intro"),
        ("主歌", "verse"),
        ("主歌A", "verse"),
        ("【主歌二】", "verse"),
        ("副歌", "chorus"),
        ("副歌：", "chorus"),
        ("桥段", "bridge"),
        ("尾声", "outro"),
        ("Chorus:", "chorus"),
        ("[Guitar Solo]", "interlude"),
        ("月光洒满窗", None),
        ("[不知道]", None),
        ("", None),
    ],
)
def test_canonical_section(tag, name):
    assert canonical_section(tag) == name
    assert name is None or name in SECTION_NAMES


def test_parse_sections_and_lines():
    doc = parse(SONG)
    assert [s.name for s in doc.sections] == ["verse", "pre-chorus", "chorus", "bridge", "outro"]
    assert doc.sections[0].tag == "[Verse 1]"
    assert doc.sections[0].lines == ["月光洒满窗", "思念我的故乡"]
    assert doc.lines[:3] == ["月光洒满窗", "思念我的故乡", "风吹过山岗"]
    assert len(doc.lines) == 7


def test_render_round_trip():
    assert render(parse(SONG)) == SONG
    messy = "  开头没有标签\n\n\n主歌1：\n  第一行  \r\n第二行\n[Chorus]\n"
    doc = parse(messy)
    assert doc.sections[0] == Section(None, None, ["开头没有标签"])
    assert doc.sections[1].name == "verse" and doc.sections[1].lines == ["第一行", "第二行"]
    assert doc.sections[2] == Section("chorus", "[Chorus]", [])
    assert parse(render(doc)) == doc


def test_untagged_text_is_one_section():
    doc = parse("床前明月光\n疑是地上霜")
    assert doc == Lyrics([Section(None, None, ["床前明月光", "疑是地上霜"])])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises_and_render_is_stable(text):
    doc = parse(text)
    assert parse(render(doc)) == doc
    assert all(line and line == line.strip() for line in doc.lines)


def test_hints_line_end_before_the_last_sung_character():
    hinted = add_hints(SONG)
    lines = hinted.split("\n")
    assert lines[0] == "[Verse 1]"  # tags get no hint
    assert lines[1] == "月光洒满〔江阳〕窗"
    assert lines[2] == "思念我的故〔江阳〕乡"
    assert lines[3] == ""  # blank lines stay blank
    assert "花〔发花〕儿" not in hinted and "开〔梭波〕了" in hinted
    assert "I love you" in lines  # no group, no hint
    assert strip_hints(hinted) == SONG
    assert has_hints(hinted) and not has_hints(SONG)


def test_hints_erhua_and_punctuation():
    assert add_hints("路边的花儿") == "路边的〔发花〕花儿"
    assert add_hints("床前明月光，") == "床前明月〔江阳〕光，"


def test_hints_line_start_and_none():
    hinted = add_hints(SONG, "line_start")
    assert "〔江阳〕月光洒满窗" in hinted.split("\n")
    assert strip_hints(hinted) == SONG
    assert add_hints(SONG, "none") == SONG


def test_hints_other_schemes():
    hinted = add_hints("我不知\n相思无处寄", "line_end", "zhonghua_xinyun")
    assert hinted == "我不〔支〕知\n相思无处〔齐〕寄"
    assert strip_hints(hinted) == "我不知\n相思无处寄"


def test_add_hints_refuses_text_that_already_has_hints():
    with pytest.raises(UserError, match="already contain a phonetic hint"):
        add_hints("月光洒满〔江阳〕窗")
    with pytest.raises(UserError, match="unknown hint mode"):
        add_hints(SONG, "everywhere")


def test_other_bracket_text_survives_the_round_trip():
    text = "明月〔态〕几时有\n〔注〕"
    assert strip_hints(add_hints(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("春花月夜长行儿嗯ab1，。 []\n〔〕江阳发花"), max_size=30),
       st.sampled_from(HINT_MODES))
def test_hint_round_trip_property(text, mode):
    if has_hints(text):
        with pytest.raises(UserError):
            add_hints(text, mode)
    else:
        assert strip_hints(add_hints(text, mode)) == text


def test_hint_round_trip_on_every_songci_song():
    songs = 0
    for path in sorted(SONGCI.glob("ci.song.*.json")):
        for poem in json.loads(path.read_text(encoding="utf-8")):
            text = "\n".join(poem["paragraphs"])
            for mode in ("line_end", "line_start"):
                hinted = add_hints(text, mode)
                assert strip_hints(hinted) == text
            songs += 1
    assert songs > 20000


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(HINT_MODES), st.sampled_from(["shisanzhe", "zhonghua_tongyun", "final"]))
def test_hint_round_trip_on_any_text(text, mode, scheme):
    if has_hints(text):
        with pytest.raises(UserError):
            add_hints(text, mode, scheme)
    else:
        assert strip_hints(add_hints(text, mode, scheme)) == text


def test_generated_hint_residue_is_stripped_but_user_brackets_are_not():
    from lyrictool.lyrics import strip_generated_hints, strip_hints

    raw = "给上在上过长〔乜阳〕福\n2辰〔江阳〕样\n半个〔言\n月光〕"
    assert strip_generated_hints(raw) == "给上在上过长福\n2辰样\n半个言\n月光"
    # strip_hints stays the exact inverse of add_hints: an editor's note in real text survives it
    assert strip_hints("春风〔态〕又绿") == "春风〔态〕又绿"
