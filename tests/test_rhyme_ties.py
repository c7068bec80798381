"""One tie rule between rhyme groups: the later line's group, for the derived `rhyme` control and the metrics."""

from __future__ import annotations

import pytest

from lyrictool.controls import derive_controls
from lyrictool.metrics import song_metrics
from lyrictool.phonetics import main_group

# 窗 乡: 江阳; 花 家: 发花; 风: 中东
CHUANG, XIANG, HUA, JIA, FENG = "月光洒满窗", "思念我的故乡", "路边一朵花", "何时能回家", "吹过一阵风"


def test_main_group_counts_and_breaks_ties_by_the_later_line():
    assert main_group(["江阳", None, "发花", "江阳", "发花"]) == ("发花", 2)
    assert main_group(["发花", "江阳", "发花", "江阳"]) == ("江阳", 2)
    assert main_group(["江阳", "发花", "江阳"]) == ("江阳", 2)  # no tie: the count decides
    assert main_group([None, None]) is None and main_group([]) is None


@pytest.mark.parametrize("lines, later", [([CHUANG, HUA, XIANG, JIA], "发花"), ([HUA, CHUANG, JIA, XIANG], "江阳")])
def test_derived_rhyme_control_takes_the_later_group_on_a_tie(lines, later):
    assert derive_controls("\n".join(lines), ["rhyme"])["rhyme"] == later


def test_a_scheme_letter_split_between_groups_takes_the_later_one():
    # AXAB on 窗 风 花 乡: A's lines tie 江阳 (窗) / 发花 (花) -> 发花, the later; B = 江阳 (乡), a different group,
    # so 花 and 乡 are right: 2 of 3. (First-seen would give A = 江阳 = B, two letters on one group: 0.)
    song = f"{CHUANG}\n{FENG}\n{HUA}\n{XIANG}"
    assert song_metrics(song, {"scheme": "AXAB"})["rhyme_accuracy"] == pytest.approx(2 / 3)


def test_rhyme_density_takes_the_later_group_as_dominant_on_a_tie():
    # 江阳 江阳 发花 中东 发花: 江阳 and 发花 tie at 2. 发花 (the later) is dominant, so its two lines rhyme,
    # and the 江阳 lines rhyme with each other as neighbours: 4 of 5. (First-seen would give 2 of 5.)
    assert song_metrics(f"{CHUANG}\n{XIANG}\n{HUA}\n{FENG}\n{JIA}")["rhyme_density"] == pytest.approx(4 / 5)
    # the same lines reversed: 发花 中东 发花 江阳 江阳 -> 江阳 is dominant and 发花 has no neighbour: 2 of 5
    assert song_metrics(f"{JIA}\n{FENG}\n{HUA}\n{XIANG}\n{CHUANG}")["rhyme_density"] == pytest.approx(2 / 5)
