"""Phonetics on real Chinese: every rhyme group, the traps, context polyphones, edge cases."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyrictool import phonetics as ph
from lyrictool.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SONGCI = ROOT / ".." / "shared" / "data" / "chinese-poetry" / "songci"

# (line a, line b, 十三辙 group of both): hand-checked rhyming pairs, at least one per group.
RHYMING = [
    ("落在我的窗前的雪花", "回到温暖的家", "发花"),
    ("东风吹过小河", "小船儿慢慢多", "梭波"),  # e and uo
    ("今夜的月", "谁在道谢", "乜斜"),  # ve and ie
    ("相思无处寄", "你在风里", "一七"),  # i
    ("我不知", "写一首诗", "一七"),  # apical -i sings as 一七
    ("走过千里路", "心里的苦", "姑苏"),
    ("春天又回来", "看那大海", "怀来"),
    ("燕子向南飞", "何时再回", "灰堆"),  # ei and uei (回 is "ui" non-strict)
    ("一叶小扁舟", "月下水东流", "由求"),  # ou and iou
    ("走过那座桥", "山那么高", "遥条"),
    ("望着蓝天", "一只小船", "言前"),
    ("又是一年春", "温暖我的心", "人辰"),  # uen and in
    ("月光洒满窗", "思念我的故乡", "江阳"),
    ("吹过一阵风", "天边的彩虹", "中东"),  # eng and ong
    ("一个人的梦", "愿你永远都懂", "中东"),
]

# Lines that must not rhyme under 十三辙 (neighbouring sounds that stay apart).
NOT_RHYMING = [
    ("温暖我的心", "天上的星"),  # in / ing: front and back nasals stay apart
    ("又是一年春", "天边的彩虹"),  # uen / ong
    ("望着蓝天", "月光洒满窗"),  # an / ang
    ("回到温暖的家", "东风吹过小河"),  # a / e
    ("今夜的月", "东风吹过小河"),  # ve / e
    ("走过千里路", "相思无处寄"),  # u / i
    ("一叶小扁舟", "走过千里路"),
]


@pytest.mark.parametrize("a, b, group", RHYMING)
def test_hand_checked_rhyming_pairs(a, b, group):
    assert ph.rhyme_group(a) == group
    assert ph.rhyme_group(b) == group
    assert ph.rhymes(a, b)


def test_every_shisanzhe_group_is_covered_by_a_hand_checked_pair():
    assert {g for _, _, g in RHYMING} == set(ph.group_names("shisanzhe"))


@pytest.mark.parametrize("a, b", NOT_RHYMING)
def test_hand_checked_non_rhyming_pairs(a, b):
    assert not ph.rhymes(a, b)


@pytest.mark.parametrize(
    "char, group",
    [
        ("我", "梭波"),  # non-strict finals would give "o"
        ("也", "乜斜"),  # non-strict "e" would collide with 梭波
        ("居", "一七"),  # ü, non-strict writes "u" (姑苏)
        ("翁", "中东"),  # ueng
        ("用", "中东"),  # iong
        ("归", "灰堆"),  # uei
        ("秋", "由求"),  # iou
        ("顺", "人辰"),  # uen, missing from SongNet's table
        ("云", "人辰"),  # vn
        ("远", "言前"),  # van
        ("儿", "一七"),  # er
    ],
)
def test_strict_final_traps(char, group):
    assert ph.rhyme_group(char) == group


def test_group_counts_per_scheme():
    assert len(ph.group_names("shisanzhe")) == 13
    assert len(ph.group_names("zhonghua_xinyun")) == 14
    assert len(ph.group_names("zhonghua_tongyun")) == 16
    assert "ang" in ph.group_names("final") and "-i" in ph.group_names("final")
    with pytest.raises(UserError, match="unknown rhyme scheme"):
        ph.group_names("pingshui")


def test_schemes_differ_where_they_should():
    # 中华新韵: the apical -i (支) is apart from i (齐); in 十三辙 both are 一七.
    assert ph.rhymes("我不知", "相思无处寄")
    assert not ph.rhymes("我不知", "相思无处寄", "zhonghua_xinyun")
    assert ph.rhyme_group("我不知", "zhonghua_xinyun") == "支"
    # 中华通韵: eng (英) and ong (雍) split; e joins ie/üe (鹅); ü (迂) leaves i (衣).
    assert not ph.rhymes("吹过一阵风", "天边的彩虹", "zhonghua_tongyun")
    assert ph.rhymes("东风吹过小河", "今夜的月", "zhonghua_tongyun")
    assert not ph.rhymes("东风吹过小河", "今夜的月")
    assert not ph.rhymes("心里的雨", "相思无处寄", "zhonghua_tongyun")
    assert ph.rhymes("心里的雨", "相思无处寄")
    # plain finals: 窗 (uang) and 乡 (iang) differ.
    assert ph.rhyme_group("月光洒满窗", "final") == "uang"
    assert not ph.rhymes("月光洒满窗", "思念我的故乡", "final")


@pytest.mark.parametrize(
    "line, char, pinyin",
    [
        ("我想睡觉", "觉", "jiào"),  # alone 觉 reads jué
        ("这种感觉", "觉", "jué"),
        ("走进银行", "行", "háng"),
        ("我们一起步行", "行", "xíng"),
        ("听一首音乐", "乐", "yuè"),
        ("祝你快乐", "乐", "lè"),
        ("我都了解", "解", "jiě"),
        ("夜路漫长", "长", "cháng"),
        ("陪你一起成长", "长", "zhǎng"),
    ],
)
def test_polyphones_are_read_in_context(line, char, pinyin):
    sound = ph.analyze_line(line)
    assert (sound.char, sound.pinyin) == (char, pinyin)


def test_context_changes_the_rhyme_group():
    assert ph.rhyme_group("这种感觉") == "乜斜"
    assert ph.rhyme_group("我想睡觉") == "遥条"
    assert ph.rhyme_group("祝你快乐") == "梭波"
    assert ph.rhyme_group("听一首音乐") == "乜斜"


@pytest.mark.parametrize(
    "line, group",
    [
        ("夢魂尋遍", "言前"),  # 遍
        ("軟語東風庭院", "言前"),  # 院
        ("萬里長風", "中东"),
        ("何處是歸鄉", "江阳"),  # 鄉
        ("燈火闌珊", "言前"),  # 珊
        ("獨上高樓", "由求"),  # 樓
        ("相見時難別亦難", "言前"),  # 難
        ("落紅無數", "姑苏"),  # 數
    ],
)
def test_traditional_characters(line, group):
    assert ph.rhyme_group(line) == group


def test_rhymes_between_traditional_and_simplified():
    assert ph.rhymes("何處是歸鄉", "思念我的故乡")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("床前明月光，", "江阳"),  # trailing punctuation is not sung
        ("床前明月光……  ", "江阳"),
        ("床前明月光 [Chorus]", "江阳"),  # trailing tag skipped
        ("「床前明月光」", "江阳"),
        ("[Verse 1]", None),  # a tag line has no sung syllable
        ("", None),
        ("，。！", None),
        ("I love you", None),  # ends in a Latin word: no group
        ("我爱你 baby", None),
        ("二〇二四年", "言前"),  # 〇 is a hanzi; 年 nián
        ("我在2024", None),  # ends in digits
        ("嗯", None),  # syllabic nasal: final "", no group
        ("你说呣", None),
        ("𧣴", None),  # a hanzi pypinyin has no reading for
    ],
)
def test_line_endings(line, expected):
    assert ph.rhyme_group(line) == expected


def test_erhua_rhymes_on_the_syllable_before_er():
    sound = ph.analyze_line("路边的花儿")
    assert (sound.char, sound.pinyin, sound.final, sound.group) == ("花儿", "huār", "ua", "发花")
    assert ph.rhyme_group("等我一会儿") == "灰堆"
    assert ph.rhyme_group("快一点儿") == "言前"
    assert ph.rhymes("路边的花儿", "回到温暖的家")
    # Words whose 儿 is a full syllable keep er.
    assert ph.rhyme_group("我的女儿") == "一七"
    assert ph.rhyme_group("儿") == "一七"


def test_line_sound_fields():
    sound = ph.analyze_line("春眠不觉晓。")
    assert sound == ph.analyze_line("春眠不觉晓")
    assert (sound.char, sound.pinyin, sound.final, sound.tone, sound.group) == ("晓", "xiǎo", "iao", 3, "遥条")
    assert ph.analyze_line("我不知").final == "-i"
    assert ph.analyze_line("走吧").tone == 5  # neutral tone
    assert ph.analyze_line("嗯").final == ""


def test_char_sound_lists_every_reading():
    readings = ph.char_sound("长")
    assert ("cháng", "ang", 2) in readings and ("zhǎng", "ang", 3) in readings
    assert ("zhī", "-i", 1) in ph.char_sound("知")
    assert ph.char_sound("a") == [] and ph.char_sound("长长") == []


@pytest.mark.parametrize(
    "value, scheme, expected",
    [
        ("江阳", "shisanzhe", "江阳"),
        ("江阳辙", "shisanzhe", "江阳"),
        (" ang ", "shisanzhe", "江阳"),
        ("iang", "shisanzhe", "江阳"),
        ("ui", "shisanzhe", "灰堆"),
        ("üe", "shisanzhe", "乜斜"),
        ("唐韵", "zhonghua_xinyun", "唐"),
        ("江阳", "zhonghua_xinyun", "唐"),  # another scheme's group, unambiguous
        ("一七", "zhonghua_xinyun", None),  # splits into 齐 and 支
        ("ang", "final", "ang"),
        ("江阳", "final", None),
        ("平水", "shisanzhe", None),
        ("", "shisanzhe", None),
    ],
)
def test_normalize_rhyme(value, scheme, expected):
    assert ph.normalize_rhyme(value, scheme) == expected


def test_final_to_group():
    assert ph.final_to_group("-i") == "一七"
    assert ph.final_to_group("-i", "zhonghua_xinyun") == "支"
    assert ph.final_to_group("ueng", "zhonghua_tongyun") == "英"
    assert ph.final_to_group("") is None and ph.final_to_group("xyz") is None


def test_syllable_count():
    assert ph.syllable_count("床前明月光，") == 5
    assert ph.syllable_count("I love you 爱你") == 5  # a Latin word counts 1
    assert ph.syllable_count("2024年") == 5  # digits 1 each
    assert ph.syllable_count("don't stop，别停") == 4
    assert ph.syllable_count("月光洒满了〔江阳〕窗") == 6  # hints are not sung
    assert ph.syllable_count("[Chorus]") == 0
    assert ph.syllable_count("") == 0


def _songci_sample(n_files: int = 2) -> list[str]:
    lines = []
    for path in sorted(SONGCI.glob("ci.song.*.json"))[:n_files]:
        for poem in json.loads(path.read_text(encoding="utf-8")):
            for p in poem["paragraphs"]:
                lines += [x for x in re.split(r"[，。、；：？！\s]+", p) if x]
    return lines


def test_fast_path_equals_whole_line_pypinyin_on_real_songci():
    # whole-line pypinyin (with the engine's phrase fixes, loaded into pypinyin's dictionary on
    # import) and then the same line-final rules
    from pypinyin import Style, lazy_pinyin

    from lyrictool.phonetics.engine import line_final_reading, sung_core

    lines = _songci_sample()
    assert len(lines) > 20000
    for line in lines:
        sound = ph.analyze_line(line)
        if sound is not None and len(sound.char) == 1:  # not 儿化
            core = sung_core(line)
            assert sound.pinyin == line_final_reading(core, lazy_pinyin(core, style=Style.TONE)[-1]), line


@pytest.mark.parametrize("skip_particles", [False, True])
@pytest.mark.parametrize("scheme", ph.SCHEMES)
def test_rhyme_group_fast_path_equals_the_line_sound(scheme, skip_particles):
    # rhyme_group (and line_groups, built on it) skips building the LineSound that the test above
    # checks against whole-line pypinyin: on real lines, with 儿化 and particles, it must agree
    lines = _songci_sample(1) + ["等我一会儿", "我的女儿", "小孩儿", "你在哪里呀", "好不了", "受不了吧", "何日还，",
                                 "月光〔江阳〕", "[Chorus]", "don't stop", "静静地", "咯咯", "心里藏"]
    groups = ph.line_groups(lines, scheme, skip_particles=skip_particles)
    for line, group in zip(lines, groups):
        sound = ph.analyze_line(line, scheme, skip_particles=skip_particles)
        assert group == ph.rhyme_group(line, scheme, skip_particles=skip_particles) == (sound and sound.group), line


def test_import_is_cheap():
    code = "import sys, lyrictool.phonetics, lyrictool.lyrics; print('pypinyin' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.sampled_from(ph.SCHEMES))
def test_no_unicode_string_crashes(a, b, scheme):
    group = ph.rhyme_group(a, scheme)
    assert group is None or group in ph.group_names(scheme)
    assert ph.rhymes(a, b, scheme) == ph.rhymes(b, a, scheme)
    assert ph.line_groups([a, b], scheme) == [group, ph.rhyme_group(b, scheme)]
    assert ph.syllable_count(a) <= len(a)  # at most one sung syllable per character
    ph.normalize_rhyme(a, scheme)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("春花月夜长行觉乐了儿嗯abc1，。 []\n〔〕江阳"), max_size=20))
def test_no_crash_on_lyric_like_text(text):
    for scheme in ph.SCHEMES:
        ph.rhyme_group(text, scheme)
        ph.line_groups(text.split("\n"), scheme)


def test_rhymes_follows_known_rhyme_positions_in_songci():
    # 浣溪沙 (7 7 7 / 7 7 7): lines 1 2 3 5 6 rhyme, line 4 is free (词谱).  Read in modern
    # Mandarin the Song rhymes mostly survive; the free line seldom rhymes by chance.
    meant = not_meant = n_meant = n_not = 0
    for path in sorted(SONGCI.glob("ci.song.*.json")):
        for poem in json.loads(path.read_text(encoding="utf-8")):
            if poem["rhythmic"] != "浣溪沙":
                continue
            lines = [x for p in poem["paragraphs"] for x in re.split(r"[，。、；：？！]+", p) if x]
            if [len(x) for x in lines] != [7] * 6:
                continue
            for a, b in ((0, 1), (1, 2), (2, 4), (4, 5)):
                meant += ph.rhymes(lines[a], lines[b])
                n_meant += 1
            not_meant += ph.rhymes(lines[3], lines[4])
            n_not += 1
    assert n_not > 500
    assert meant / n_meant > 0.8  # measured 85.0%
    assert not_meant / n_not < 0.15  # measured 8.6%
