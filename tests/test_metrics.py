"""Objective metrics: the worked examples of docs/metrics.md, edge cases, and no crashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lyrictool.metrics import RATE_METRICS, aggregate, song_metrics

# Groups: 窗 江阳, 乡 江阳, 花 发花, 家 发花, 风 中东, 红 中东
SONG = """[Verse 1]
月光洒满窗
思念我的故乡
路边一朵花
何时能回家

[Chorus]
吹过一阵风
天边的彩虹"""


def test_rhyme_accuracy_against_a_group():
    m = song_metrics(SONG, {"rhyme": "江阳"})
    assert m["rhyme_accuracy"] == pytest.approx(2 / 6)
    assert song_metrics(SONG, {"rhyme": "ang"})["rhyme_accuracy"] == pytest.approx(2 / 6)


def test_rhyme_accuracy_against_a_scheme():
    assert song_metrics(SONG, {"scheme": "AABBCC"})["rhyme_accuracy"] == 1.0
    # XAXA: only lines 2 and 4 are constrained; 乡 (江阳) and 家 (发花) differ -> 1 of 2.
    assert song_metrics(SONG, {"scheme": "XAXAXX"})["rhyme_accuracy"] == pytest.approx(1 / 2)
    # ABAB: A = {窗, 花} and B = {乡, 家} each split; the majority tie goes to the later line,
    # so A = 发花 (花 right, 窗 wrong) and B = 发花 too: two letters on one group -> all wrong.
    assert song_metrics(SONG, {"scheme": "ABABXX"})["rhyme_accuracy"] == 0.0
    # "AAAA" does not satisfy "AABB": letters must rhyme apart.
    same = "月光洒满窗\n思念我的故乡\n远方的山岗\n夜路漫长"
    assert song_metrics(same, {"scheme": "AABB"})["rhyme_accuracy"] == 0.0
    assert song_metrics(same, {"scheme": "AAAA"})["rhyme_accuracy"] == 1.0


def test_rhyme_accuracy_with_group_and_scheme():
    # The rhyme control fixes the first letter's group.
    assert song_metrics(SONG, {"rhyme": "江阳", "scheme": "AABBCC"})["rhyme_accuracy"] == 1.0
    # A = 发花 is asked: lines 1-2 (江阳) fail, B's majority is 发花 too (taken by A) so lines
    # 3-4 fail, only C (中东) is right.
    assert song_metrics(SONG, {"rhyme": "发花", "scheme": "AABBCC"})["rhyme_accuracy"] == pytest.approx(2 / 6)
    # pattern longer than the song: the missing lines count as wrong
    assert song_metrics(SONG, {"scheme": "AABBCCAA"})["rhyme_accuracy"] == pytest.approx(6 / 8)


def test_rhyme_density():
    # every line shares its group with a neighbour
    assert song_metrics(SONG)["rhyme_density"] == 1.0
    # dominant group 江阳 (3 lines) + none of the others neighbour-rhyme: 3 / 5
    text = "月光洒满窗\n路边一朵花\n思念我的故乡\n吹过一阵风\n夜路漫长"
    assert song_metrics(text)["rhyme_density"] == pytest.approx(3 / 5)
    assert song_metrics("月光洒满窗")["rhyme_density"] == 0.0
    assert song_metrics("I love you\nyou love me")["rhyme_density"] == 0.0


def test_line_length_accuracy():
    m = song_metrics(SONG, {"line_lengths": [5, 6, 5, 5, 5, 5]})
    assert m["line_length_accuracy"] == 1.0
    m = song_metrics(SONG, {"line_lengths": [5, 5, 5, 5, 7, 5]})
    assert m["line_length_accuracy"] == pytest.approx(4 / 6)
    assert m["line_length_accuracy_pm1"] == pytest.approx(5 / 6)
    m = song_metrics(SONG, {"line_lengths": [5, 5, 5, 5, 5, 5]})
    assert m["line_length_accuracy"] == pytest.approx(5 / 6)
    assert m["line_length_accuracy_pm1"] == 1.0
    # two requested lines, six written: the extra four count as wrong
    assert song_metrics(SONG, {"line_lengths": [5, 6]})["line_length_accuracy"] == pytest.approx(2 / 6)


def test_structure_accuracy():
    good = [{"section": "verse", "lines": 4}, {"section": "chorus", "lines": 2}]
    assert song_metrics(SONG, {"structure": good})["structure_accuracy"] == 1.0
    assert song_metrics(SONG, {"structure": [{"section": "主歌", "lines": 4}, {"section": "副歌", "lines": 2}]})[
        "structure_accuracy"
    ] == 1.0
    wrong_count = [{"section": "verse", "lines": 4}, {"section": "chorus", "lines": 4}]
    assert song_metrics(SONG, {"structure": wrong_count})["structure_accuracy"] == 0.5
    extra = good + [{"section": "bridge", "lines": 2}]
    assert song_metrics(SONG, {"structure": extra})["structure_accuracy"] == pytest.approx(2 / 3)
    assert song_metrics("没有标签\n一行", {"structure": good})["structure_accuracy"] == 0.0


def test_metrics_not_requested_are_none():
    m = song_metrics(SONG)
    for key in ("rhyme_accuracy", "line_length_accuracy", "line_length_accuracy_pm1", "structure_accuracy"):
        assert m[key] is None
    assert m["format_validity"] == 1.0 and m["n_lines"] == 6 and m["n_sections"] == 2


def test_controls_as_pydantic_object():
    from pydantic import BaseModel

    class C(BaseModel):
        rhyme: str | None = None
        scheme: str | None = None

    assert song_metrics(SONG, C(rhyme="江阳"))["rhyme_accuracy"] == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    "text, issue",
    [
        ("", "empty"),
        ("[Verse]\n\n", "empty"),
        ("月光洒满〔江阳〕窗", "leaked hints"),
        ("请写一首中文歌词。\n押韵：江阳辙\n月光洒满窗", "leaked control text"),
        ("<|im_start|>assistant\n月光洒满窗", "leaked control text"),
        ("月光洒满窗\n" + "啊" * 12, "character loop"),
        ("\n".join(["月光洒满窗"] * 6), "line loop"),
        ("床" * 80, "run-on line"),
        ("a\nb\na\nb\na\nb", "mostly repeated lines"),
    ],
)
def test_format_validity_catches(text, issue):
    m = song_metrics(text)
    assert m["format_validity"] == 0.0
    assert issue in m["format_issues"]


def test_a_chorus_repeated_twice_is_fine():
    text = SONG + "\n\n[Chorus]\n吹过一阵风\n天边的彩虹"
    m = song_metrics(text)
    assert m["format_validity"] == 1.0
    assert m["repetition_rate"] == pytest.approx(2 / 8)


def test_distinct_and_repetition():
    m = song_metrics("春风春雨\n春风春雨")
    assert m["distinct_1"] == pytest.approx(3 / 8)  # 春 风 雨 out of 8 characters
    assert m["distinct_2"] == pytest.approx(3 / 6)  # 春风 风春 春雨 out of 6 bigrams
    assert m["repetition_rate"] == 0.5


def test_aggregate():
    per = [
        song_metrics(SONG, {"rhyme": "江阳"}),
        song_metrics(SONG),
        song_metrics(""),
    ]
    agg = aggregate(per)
    assert agg["n"] == 3
    assert agg["rhyme_accuracy"] == pytest.approx(2 / 6) and agg["n_rhyme_accuracy"] == 1
    assert agg["format_validity"] == pytest.approx(2 / 3) and agg["n_format_validity"] == 3
    assert agg["structure_accuracy"] is None and agg["n_structure_accuracy"] == 0
    assert agg["format_issues"] == {"empty": 1}
    assert aggregate([])["n"] == 0


_controls = st.fixed_dictionaries(
    {},
    optional={
        "rhyme": st.one_of(st.text(max_size=4), st.sampled_from(["江阳", "ang", "发花"])),
        "scheme": st.text(alphabet="ABX ", max_size=10),
        "line_lengths": st.lists(st.integers(-3, 70), max_size=10),
        "structure": st.lists(
            st.fixed_dictionaries({"section": st.sampled_from(["verse", "chorus", "主歌", "?"]),
                                   "lines": st.integers(0, 10)}),
            max_size=5,
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.text(), _controls, st.sampled_from(["shisanzhe", "zhonghua_xinyun", "zhonghua_tongyun", "final"]))
def test_no_input_crashes_and_rates_stay_in_range(text, controls, scheme):
    m = song_metrics(text, controls, scheme)
    for key in RATE_METRICS:
        assert m[key] is None or 0.0 <= m[key] <= 1.0, key
    aggregate([m, m])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["江阳", "发花", "中东", None]), min_size=1, max_size=8),
       st.sampled_from([None, "江阳", "发花"]), st.sampled_from([None, "AABB", "ABAB", "AAXA", "XAXA", "AAAA"]))
def test_rhyme_line_hits_is_the_per_line_view_of_rhyme_accuracy(groups, target, pattern):
    """What the playground marks per line adds up to the song's rhyme_accuracy."""
    from lyrictool.metrics import _rhyme_accuracy, pattern_units, rhyme_line_hits

    hits = rhyme_line_hits(groups, target, pattern)
    assert len(hits) == len(groups)
    accuracy = _rhyme_accuracy(groups, target, pattern)
    if pattern is None and target is None:
        assert accuracy is None and hits == [None] * len(groups)
    elif pattern is None:
        assert accuracy == sum(hits) / len(groups)
    else:
        # a pattern shorter than the song repeats over it (pattern_units), as rhyme_accuracy scores it
        units = pattern_units(pattern, [len(groups)])
        constrained = sum(ch != "X" for _, letters in units for ch in letters)
        assert accuracy == sum(h is True for h in hits) / constrained
        assert all(hits[i] is None for idx, letters in units for i, ch in zip(idx, letters) if ch == "X" and i is not None)


# Two sections that rhyme differently: AABB in the verse, ABAB in the chorus.
TWO_PATTERNS = """[Verse]
月光洒满窗
思念我的故乡
路边一朵花
何时能回家

[Chorus]
吹过一阵风
又是一年春
天边的彩虹
温暖我的心"""


def test_scheme_per_section():
    # one pattern per section, letters local to each section
    assert song_metrics(TWO_PATTERNS, {"scheme": "AABB|ABAB"})["rhyme_accuracy"] == 1.0
    assert song_metrics(TWO_PATTERNS, {"scheme": "AABB / ABAB"})["rhyme_accuracy"] == 1.0
    # one short pattern applies to every section: the chorus is ABAB, not AABB
    assert song_metrics(TWO_PATTERNS, {"scheme": "AABB"})["rhyme_accuracy"] == pytest.approx(4 / 8)
    assert song_metrics(TWO_PATTERNS, {"scheme": "ABAB"})["rhyme_accuracy"] == pytest.approx(4 / 8)
    # a whole-song pattern keeps its letters across sections: C and D are new groups
    assert song_metrics(TWO_PATTERNS, {"scheme": "AABBCDCD"})["rhyme_accuracy"] == 1.0
    # without section tags, a short pattern repeats over the lines in chunks
    plain = "\n".join(TWO_PATTERNS.replace("[Verse]\n", "").replace("[Chorus]\n", "").split("\n\n"))
    assert song_metrics(plain, {"scheme": "AABB"})["rhyme_accuracy"] == pytest.approx(4 / 8)


def test_near_rhyme_figures_are_reported_next_to_strict_ones():
    # 风/彩虹 (中东) and 春/心 (人辰) are near rhymes of each other: strict ABAB holds, and near
    # rhymes make A and B rhyme together, so the letters no longer rhyme apart.
    m = song_metrics(TWO_PATTERNS, {"scheme": "AABB|ABAB"})
    assert m["rhyme_accuracy"] == 1.0 and m["rhyme_accuracy_near"] == pytest.approx(4 / 8)
    chorus = "吹过一阵风\n又是一年春\n天边的彩虹\n温暖我的心"
    m = song_metrics(chorus, {"rhyme": "中东"})
    assert m["rhyme_accuracy"] == pytest.approx(2 / 4) and m["rhyme_accuracy_near"] == 1.0
    m = song_metrics("你的心\n满天的星\n一个人")
    assert m["rhyme_density"] == pytest.approx(2 / 3) and m["rhyme_density_near"] == 1.0
    assert song_metrics(chorus)["rhyme_accuracy_near"] is None  # nothing asked


def test_repeated_lines_counts_later_copies_ignoring_punctuation():
    from lyrictool.metrics import repeated_lines

    assert repeated_lines(["我的家", "一朵花", "我的家，", "回老家"]) == 0.25
    assert repeated_lines(["春风", "春风", "春风", "春风"]) == 0.75  # a loop scores near 1
    assert repeated_lines(["春风", "春雨"]) == 0.0 and repeated_lines([]) == 0.0
    # song_metrics reports it for what is sung: tags and hints are not lines, punctuation does not count
    m = song_metrics("[Verse]\n我的家\n一朵〔发花〕花\n\n[Chorus]\n我的家，\n回老家", {})
    assert m["repeated_lines"] == 0.25 and m["repetition_rate"] == 0.0  # repetition_rate compares lines as written


def test_repeated_rhyme_chars_flags_rhyme_bought_by_one_character():
    from lyrictool.metrics import repeated_rhyme_chars

    # every line rhymes 发花, but on only two characters: the second and fourth ends repeat 家
    assert repeated_rhyme_chars(["我的家", "一朵花", "我的家", "回老家"]) == 0.5
    assert repeated_rhyme_chars(["我的家", "一朵花", "晚霞", "说话"]) == 0.0
    assert repeated_rhyme_chars(["Hello", "123"]) is None  # no line ends in a rhyme group
