"""Phonetics of sung Chinese: syllables, finals, tones and rhyme groups.

Importing this package is cheap: the rhyme tables are plain data, and pypinyin (~0.2 s and
~66 MB of dictionaries) is loaded by :mod:`lyrictool.phonetics.engine` the first time a line
is read.  The rhyme of a line is that of its last *sung* syllable, read in the line's context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lyrictool.phonetics.tables import (
    NEAR_FINALS,
    SCHEMES,
    STRICTNESS,
    check_scheme,
    check_strictness,
    final_to_group,
    group_names,
    groups_rhyme,
    near_groups,
    normalize_rhyme,
)

if TYPE_CHECKING:
    from lyrictool.phonetics.engine import LineSound

__all__ = [
    "NEAR_FINALS",
    "SCHEMES",
    "STRICTNESS",
    "LineSound",
    "analyze_line",
    "char_sound",
    "check_scheme",
    "check_strictness",
    "final_to_group",
    "group_names",
    "groups_pattern",
    "groups_rhyme",
    "line_groups",
    "main_group",
    "near_groups",
    "normalize_rhyme",
    "rhyme_group",
    "rhyme_pattern",
    "rhymes",
    "syllable_count",
]


def __getattr__(name: str):
    if name == "LineSound":
        from lyrictool.phonetics.engine import LineSound

        return LineSound
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_engine = None  # lyrictool.phonetics.engine once loaded: per-line calls skip the import statement


def _load_engine():
    global _engine
    from lyrictool.phonetics import engine

    _engine = engine
    return engine


def analyze_line(line: str, scheme: str = "shisanzhe", *, skip_particles: bool = False) -> LineSound | None:
    """The last sung syllable of ``line`` (char, pinyin, final, tone, group), or None.

    Trailing punctuation, spaces, symbols and section tags are skipped.  None when the line
    ends in something that is not a hanzi (a Latin word, digits) or has no hanzi at all.
    A line-final 儿 after another hanzi is 儿化: the rhyme is the previous syllable's.
    A trailing particle (吗 吧 啊 了 的 ...) is the rhyme, as in pop lyrics; ``skip_particles=True``
    applies the older 虚字脚 rule instead and rhymes on the syllable before it.
    """
    return (_engine or _load_engine()).analyze_line(line, scheme, skip_particles)


def rhyme_group(line: str, scheme: str = "shisanzhe", *, skip_particles: bool = False) -> str | None:
    """The rhyme group of the line's last sung syllable under ``scheme``, or None."""
    return (_engine or _load_engine()).rhyme_group(line, scheme, skip_particles)


def rhymes(a: str, b: str, scheme: str = "shisanzhe", strictness: str = "strict", *,
           skip_particles: bool = False) -> bool:
    """True when both lines have a rhyme group and it is the same one.

    ``strictness="near"`` also accepts a near rhyme: finals the scheme keeps apart but songs rhyme
    together (front/back nasals 心/星, 人/冷; see ``NEAR_FINALS`` and docs/rhyme-schemes.md).
    """
    engine = _engine or _load_engine()
    check_strictness(strictness)
    group = engine.rhyme_group(a, scheme, skip_particles)
    return group is not None and groups_rhyme(group, engine.rhyme_group(b, scheme, skip_particles), scheme, strictness)


def line_groups(lines: list[str], scheme: str = "shisanzhe", *, skip_particles: bool = False) -> list[str | None]:
    """``rhyme_group`` of every line, on the fast batch path."""
    return (_engine or _load_engine()).line_groups(lines, scheme, skip_particles)


_PATTERN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWYZ"  # X means "free", so it is not a rhyme letter


def rhyme_pattern(lines: list[str], scheme: str = "shisanzhe", strictness: str = "strict", *,
                  skip_particles: bool = False) -> list[str]:
    """One letter per line: the rhyme pattern of ``lines`` (one section), e.g. A A B B or A B A B.

    Lines that rhyme with each other get the same letter, in order of first appearance; a line that
    rhymes with no other line of ``lines`` (or has no rhyme at all) gets ``X``, as in the ``scheme``
    control.  With ``strictness="near"`` a line joins the first earlier letter whose first line's
    group it rhymes with, near rhymes included.
    """
    return groups_pattern(line_groups(lines, scheme, skip_particles=skip_particles), scheme, strictness)


def groups_pattern(groups: list[str | None], scheme: str = "shisanzhe", strictness: str = "strict") -> list[str]:
    """:func:`rhyme_pattern` of lines whose rhyme groups (``line_groups``) are already known."""
    check_strictness(strictness)
    firsts: list[str] = []  # the group of each letter's first line
    members: list[list[int]] = []
    for i, group in enumerate(groups):
        if group is None:
            continue
        for k, first in enumerate(firsts):
            if groups_rhyme(group, first, scheme, strictness):
                members[k].append(i)
                break
        else:
            firsts.append(group)
            members.append([i])
    out = ["X"] * len(groups)
    letter = 0
    for group in members:
        if len(group) >= 2:
            for i in group:
                out[i] = _PATTERN_LETTERS[min(letter, len(_PATTERN_LETTERS) - 1)]
            letter += 1
    return out


def main_group(groups: Sequence[str | None]) -> tuple[str, int] | None:
    """The most frequent rhyme group of a song's lines (``line_groups``) and its count; None if no line has one.

    Ties go to the group of the later line (songs end on their rhyme), never to set or dict order.  The one tie
    rule for the derived ``rhyme`` control and for the metrics' main group of a song or a scheme letter.
    """
    counts: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, group in enumerate(groups):
        if group is not None:
            counts[group] = counts.get(group, 0) + 1
            last[group] = i
    if not counts:
        return None
    top = max(counts, key=lambda g: (counts[g], last[g]))
    return top, counts[top]


def char_sound(char: str) -> list[tuple[str, str, int]]:
    """Every reading of one hanzi as (pinyin with tone marks, final, tone); [] if none."""
    return (_engine or _load_engine()).char_sound(char)


# A sung Latin word (with apostrophes/hyphens inside: don't, la-la) or one digit, or one
# character of any other script; hints 〔江阳〕 and section tags are not sung.
_NOT_SUNG = re.compile(r"〔[^〔〕]*〕|\[[^\[\]]*\]|【[^【】]*】")
_SYLLABLE = re.compile(r"[A-Za-zÀ-ɏ]+(?:['’\-][A-Za-zÀ-ɏ]+)*|[^\W_]", re.UNICODE)


def sung_syllables(line: str) -> list[str]:
    """The sung syllables of ``line``: each hanzi, Latin word or digit (the tokens of the diversity metrics)."""
    return _SYLLABLE.findall(_NOT_SUNG.sub(" ", line))


def syllable_count(line: str) -> int:
    """Sung syllables in ``line``: one per hanzi, per Latin word, per digit.

    Punctuation, spaces, hints and section tags do not count.  This is the "characters per
    line" of the ``line_lengths`` control.
    """
    return len(sung_syllables(line))
