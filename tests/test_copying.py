"""Copying figures against a reference corpus (lyrictool.copying): the suffix array, the three figures on worked
examples, spans that must not cross two reference texts, the shared 宋词 as a reference, and the copying rule."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import SHARED_DATA

from lyrictool.copying import ReferenceIndex, aggregate_copying, normalize, suffix_array
from lyrictool.errors import UserError
from lyrictool.rewards import CopyGuard

REFERENCE = ["明月几时有，把酒问青天。\n不知天上宫阙，今夕是何年。", "春风又绿江南岸\n明月何时照我还"]


def test_suffix_array_matches_sorting_every_suffix():
    rng = random.Random(0)
    for _ in range(200):
        s = "".join(rng.choice("ab江") for _ in range(rng.randint(1, 40)))
        sa = suffix_array(np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32))
        assert list(sa) == sorted(range(len(s)), key=lambda i: s[i:]), s


def test_normalize_keeps_only_text():
    assert normalize("明月，几时有？\n [Verse] Hello!") == "明月几时有versehello"


def test_worked_example():
    idx = ReferenceIndex(REFERENCE, min_line_chars=5, ngram=4)
    # line 1 is a reference line with other punctuation; line 2 is new; line 3 (4 chars) is too short to count
    song = "[Verse]\n明月几时有 把酒问青天\n我在远方想故乡\n春风又绿"
    c = idx.song(song)
    assert c.lcs == 10 and c.span == "明月几时有把酒问青天"
    assert c.lines == 1 / 2 and c.n_lines == 2
    # text 明月几时有把酒问青天我在远方想故乡春风又绿 (21 chars, 18 4-grams): 7 inside the copied span
    # and 春风又绿; none across a line end (天我在远 is nowhere)
    assert c.n_ngrams == 18 and c.ngram == pytest.approx(8 / 18)
    assert idx.song("我在远方想故乡").lcs == 1  # 我 alone occurs (明月何时照我还)


def test_spans_do_not_cross_two_reference_texts():
    idx = ReferenceIndex(["今夕是何年", "春风又绿江南岸"])
    assert idx.song("今夕是何年春风又绿").lcs == 5  # the two texts are not one text


def test_a_copied_poem_on_the_shared_songci():
    path = SHARED_DATA / "songci" / "songci300.json"
    if not path.is_file():
        pytest.skip("shared chinese-poetry data not present")
    from lyrictool.data.reference import reference_index

    idx = reference_index([str(path)])
    copied = idx.song("明月几时有\n把酒问青天\n不知天上宫阙\n今夕是何年")  # 苏轼《水调歌头》, in 宋词三百首
    assert copied.lcs == 21 and copied.lines == 1.0 and copied.ngram == 1.0
    own = idx.song("[Verse]\n月光洒满小村庄\n晚风吹过稻花香\n\n[Chorus]\n我在远方想故乡\n梦里回到老地方")
    assert own.lcs < 6 and own.lines == 0.0
    summary = aggregate_copying([copied, own])
    assert summary["copy_lcs_max"] == 21 and summary["copy_long"]["mean"] == 0.5
    assert summary["longest_span"] == "明月几时有把酒问青天不知天上宫阙今夕是何年"


def test_copy_guard_is_a_safety_rule(write_jsonl):
    corpus = write_jsonl("corpus.jsonl", [{"lyrics": REFERENCE[0]}, {"lyrics": REFERENCE[1]}])
    guard = CopyGuard.from_sources([str(corpus)], max_span=8)
    assert guard.safety("明月几时有把酒问青天") == 0.0 and guard.copied("明月几时有，把酒问青天") == "明月几时有把酒问青天"
    assert guard.safety("明月几时有\n我在远方想故乡") == 1.0  # 5 shared characters: a phrase, not a copy


def test_reference_faults_name_the_source(tmp_path, write_jsonl):
    from lyrictool.data.reference import reference_texts

    with pytest.raises(UserError, match=r"reference\[0\]: .*nope.jsonl: no such file"):
        reference_texts([str(tmp_path / "nope.jsonl")])
    bad = write_jsonl("bad.jsonl", [{"lyrics": "明月"}, {"text": "x"}])
    with pytest.raises(UserError, match=r"bad.jsonl:2: a reference row needs a 'lyrics' string"):
        reference_texts([str(bad)])
    with pytest.raises(UserError, match="empty list"):
        reference_texts([])


def test_copying_is_a_reward_component(write_jsonl):
    from lyrictool.rewards import Rewards

    corpus = write_jsonl("corpus.jsonl", [{"lyrics": REFERENCE[0]}])
    rewards = Rewards.from_specs([{"name": "format"}, {"name": "copying", "weight": 2.0, "path": str(corpus)}])
    copied, own = rewards.score([{}, {}], ["明月几时有\n把酒问青天\n不知天上宫阙", "我在远方想故乡\n梦里回到老地方"])
    assert copied.components["copying"] == 0.0 and own.components["copying"] == 1.0
    assert own.total - copied.total == 2.0
    with pytest.raises(Exception, match="reward copying needs path"):
        Rewards.from_specs([{"name": "copying"}])


def test_a_span_longer_than_the_search_window_is_measured_whole():
    long_text = "".join(REFERENCE) * 2  # 80+ characters, one reference text
    idx = ReferenceIndex([long_text, "春风又绿江南岸"])
    song = "\n".join(long_text.replace("，", "\n").replace("。", "\n").split())
    assert idx.song(song).lcs == len(normalize(long_text)) > 48
    assert idx.longest_prefix(normalize(long_text) + "外")[0] == len(normalize(long_text))
