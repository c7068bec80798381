"""The rhyme engine on tests/data/modern_lines.tsv: modern lyric lines written for this project."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

from lyrictool import phonetics as ph
from lyrictool.errors import UserError


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("rhyme_modern", REPO / "bench" / "rhyme_modern.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_set_covers_what_issue_14_asks(bench):
    rows = bench.load()
    assert len(rows) >= 200
    cats = {r.category for r in rows}
    assert {"poly", "particle", "erhua", "latin", "near"} <= cats
    # both readings of the line-final polyphones the issue names
    for char, readings in {"了": {"liao", "le"}, "着": {"zhao", "zhe", "zhuo"}, "觉": {"jiao", "jue"},
                           "行": {"xing", "hang"}, "地": {"di", "de"}}.items():
        assert {bench.toneless(r.pinyin) for r in rows if r.char == char} >= readings, char
    for particle in "吗吧啊呀啦了的着呢":
        assert any(r.category == "particle" and r.char == particle for r in rows), particle


def test_accuracy_on_modern_lines_is_at_least_95_percent(bench):
    result = bench.score(bench.load())
    print(f"\n{result.right}/{result.rows} right; failures:")
    for line in result.failures:
        print("  " + line)
    assert result.accuracy >= 0.95
    assert result.group_right / result.rows >= 0.95


@pytest.mark.parametrize(
    "line, pinyin, group",
    [
        ("这点小事算得了", "liǎo", "遥条"),  # 了 as a potential complement
        ("你的心我猜不着", "zháo", "遥条"),  # 着 as a result complement
        ("借了书要还", "huán", "言前"),  # line-final 还 is the verb
        ("我记得了", "le", "梭波"),  # 记得 + the particle 了
        ("天亮了", "le", "梭波"),
        ("就这样静静地", "de", "梭波"),
        ("一个人站在原地", "dì", "一七"),
        ("回家的路好长", "cháng", "江阳"),
        ("看着你慢慢成长", "zhǎng", "江阳"),
        ("门口玩耍的小孩儿", "háir", "怀来"),
        ("我是你的女儿", "ér", "一七"),
    ],
)
def test_issue_examples_and_rules(line, pinyin, group):
    sound = ph.analyze_line(line)
    assert (sound.pinyin, sound.group) == (pinyin, group)
    assert ph.line_groups([line]) == [group]


def test_phrase_fixes_reach_pypinyin_itself():
    from pypinyin import Style, lazy_pinyin

    from lyrictool.phonetics import engine

    assert engine.PHRASE_FIXES and all(reason for _, reason in engine.PHRASE_FIXES.values())
    assert lazy_pinyin("隔着千山万重", style=Style.TONE)[-1] == "chóng"


def test_near_rhyme_pairs_of_the_set(bench):
    result = bench.score(bench.load())
    assert result.pairs >= 15
    assert result.pair_failures == []


def test_near_rhymes_are_opt_in_and_documented_per_scheme():
    assert not ph.rhymes("你的心", "满天的星")  # strict is the default
    assert ph.rhymes("你的心", "满天的星", strictness="near")
    assert ph.rhymes("梦里有你的声音", "远处的灯", strictness="near")  # in / eng: 人辰 ~ 中东
    assert not ph.rhymes("海上的船", "城市的光", strictness="near")  # an / ang stay apart
    assert ph.near_groups("shisanzhe") == [("梭波", "乜斜"), ("人辰", "中东")]
    assert ("齐", "支") in ph.near_groups("zhonghua_xinyun")  # 十三辙 rhymes i with the apical -i
    with pytest.raises(UserError, match="strictness"):
        ph.rhymes("心", "星", strictness="loose")


def test_particles_stay_the_rhyme_unless_xuzijiao_is_asked_for():
    assert ph.rhyme_group("你还爱我吗") == "发花"
    assert ph.rhyme_group("你还爱我吗", skip_particles=True) == "梭波"  # 我
    assert ph.rhyme_group("别再等了吧", skip_particles=True) == "中东"  # 吧 and 了 both skipped: 等
    assert ph.rhyme_group("这点小事算得了", skip_particles=True) == "遥条"  # 了 liǎo is no particle
    assert ph.line_groups(["你还爱我吗", "天亮了"], skip_particles=True) == ["梭波", "江阳"]


def test_rhyme_pattern_labels_each_line():
    assert ph.rhyme_pattern(["月光洒满窗", "思念我的故乡", "你的心", "又是一年春"]) == list("AABB")
    assert ph.rhyme_pattern(["月光洒满窗", "你的心", "思念我的故乡", "又是一年春"]) == list("ABAB")
    assert ph.rhyme_pattern(["月光洒满窗", "你的心", "思念我的故乡", "baby"]) == list("AXAX")
    assert ph.rhyme_pattern(["你的心", "满天的星"]) == list("XX")
    assert ph.rhyme_pattern(["你的心", "满天的星"], strictness="near") == list("AA")
