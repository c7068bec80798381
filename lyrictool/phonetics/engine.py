"""The last sung syllable of a line, read in context, fast.

pypinyin reads polyphones (长 行 觉 乐 ...) from its phrase dictionary by forward maximum
matching over the text it is given, so the reading of a line's last character depends on the
line.  Converting the whole line and keeping the last syllable is right but slow (~55 µs a
line).  The shortcut here gives the *same* answer as pypinyin on the whole line, cheaply:

* the last character ``c`` can only be read (a) alone, with its default reading, or (b) as the
  last syllable of a dictionary phrase that is a suffix of the line (a segment never crosses
  the end of the line);
* for most characters every phrase ending in ``c`` reads ``c`` with its default reading, so
  the answer is the default and no segmentation is needed (one dict lookup);
* otherwise we look up the line's suffixes (at most 9, the phrase dictionary's longest entry
  is 10 characters); if none of them disagree with the default, the default is the answer;
* only when they disagree do we run pypinyin's own segmenter on the line's last run of hanzi
  and take the reading of the segment that covers ``c`` -- exactly what ``lazy_pinyin`` does.

``bench/rhyme_speed.py`` checks that this equals the whole-line baseline on every 宋词 line.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from pypinyin.constants import PHRASES_DICT, PINYIN_DICT, RE_HANS
from pypinyin.contrib.tone_convert import to_finals, to_initials, to_tone3
from pypinyin.seg import mmseg

from lyrictool.phonetics.tables import _FINAL_TO_GROUP, check_scheme

#: Initials after which pypinyin's ``i`` is the apical vowel (知 吃 诗 日 资 雌 思).
APICAL_INITIALS = frozenset({"zh", "ch", "sh", "r", "z", "c", "s"})

#: Two-character words whose 儿 is a full syllable ``ér``, never 儿化 (so 女儿 ends in er, 一七).
FULL_ER_WORDS = frozenset(
    {"女儿", "男儿", "孤儿", "婴儿", "幼儿", "健儿", "宠儿", "胎儿", "患儿", "孩儿", "儿儿", "乳儿"}
)

_MAX_PHRASE = max(len(p) for p in PHRASES_DICT)


@dataclass(frozen=True)
class LineSound:
    """The rhyme-bearing syllable of a line.

    ``char`` is the sung character (for a 儿化 ending, both characters, e.g. "花儿");
    ``pinyin`` has tone marks ("chūn", 儿化: "huār"); ``final`` is the strict final with the
    apical vowel written ``-i`` ("" for 嗯/呣); ``tone`` is 1-4, or 5 for the neutral tone;
    ``group`` is the rhyme group under the scheme asked for, or None.
    """

    char: str
    pinyin: str
    final: str
    tone: int
    group: str | None


# --- character classes ---------------------------------------------------------------------

_HAN, _SKIP, _WORD = 0, 1, 2  # a hanzi; not sung (punctuation, space, symbol); a sung non-hanzi


@lru_cache(maxsize=65536)
def char_kind(char: str) -> int:
    """_HAN for a hanzi (pypinyin's RE_HANS), _SKIP for what is not sung, _WORD otherwise."""
    if RE_HANS.match(char):
        return _HAN
    category = unicodedata.category(char)
    if category[0] in "PZSC" or category == "Mn":
        return _SKIP
    return _WORD


_TAG_CLOSERS = {"]": "[", "】": "【"}


def sung_core(line: str) -> str:
    """``line`` without trailing punctuation, spaces, symbols and section tags ("[Chorus]")."""
    end = len(line)
    while end:
        ch = line[end - 1]
        opener = _TAG_CLOSERS.get(ch)
        if opener is not None:
            start = line.rfind(opener, 0, end - 1)
            if start >= 0:
                end = start
                continue
        if char_kind(ch) != _SKIP:
            break
        end -= 1
    return line[:end]


# --- readings ------------------------------------------------------------------------------

_DEFAULT_READING: dict[str, str] = {}
for _code, _readings in PINYIN_DICT.items():
    _DEFAULT_READING[chr(_code)] = _readings.split(",", 1)[0]

# phrase -> reading of its last character; only for phrases whose last reading differs from
# that character's default reading (the only phrases that can change a line-final reading).
_PHRASE_LAST: dict[str, str] = {}
for _phrase, _syllables in PHRASES_DICT.items():
    _last = _syllables[-1][0]
    if _last != _DEFAULT_READING.get(_phrase[-1]):
        _PHRASE_LAST[_phrase] = _last
_CONTEXT_CHARS = frozenset(p[-1] for p in _PHRASE_LAST)


def _segment_readings(run: str) -> list[str | None]:
    """Readings of every character of a hanzi run, as ``lazy_pinyin`` would give them."""
    out: list[str | None] = []
    for segment in mmseg.seg.cut(run):
        if segment in PHRASES_DICT:
            out.extend(s[0] for s in PHRASES_DICT[segment])
        else:
            out.extend(_DEFAULT_READING.get(ch) for ch in segment)
    return out


def _han_run(core: str) -> str:
    """The maximal run of hanzi that ends ``core`` (pypinyin segments each run on its own)."""
    start = len(core)
    while start and char_kind(core[start - 1]) == _HAN:
        start -= 1
    return core[start:]


def last_reading(core: str) -> str | None:
    """The reading of ``core``'s last character (a hanzi) in context; None if it has none."""
    char = core[-1]
    default = _DEFAULT_READING.get(char)
    if char not in _CONTEXT_CHARS:
        return default
    n = len(core)
    for k in range(2, min(_MAX_PHRASE, n) + 1):
        if core[n - k :] in _PHRASE_LAST:
            break  # a phrase could read it differently: segment the line as pypinyin does
    else:
        return default
    return _segment_readings(_han_run(core))[-1]


@lru_cache(maxsize=4096)
def _sound_parts(reading: str) -> tuple[str, int]:
    """(strict final with apical -i, tone) of one tone-marked reading."""
    final = to_finals(reading, strict=True)
    if final == "i" and to_initials(reading, strict=True) in APICAL_INITIALS:
        final = "-i"
    tone3 = to_tone3(reading)
    tone = int(tone3[-1]) if tone3 and tone3[-1] in "1234" else 5
    return final, tone


def _is_erhua(core: str) -> bool:
    return (
        len(core) >= 2
        and core[-1] == "儿"
        and char_kind(core[-2]) == _HAN
        and core[-2:] not in FULL_ER_WORDS
    )


def analyze_core(core: str, scheme: str) -> LineSound | None:
    if not core or char_kind(core[-1]) != _HAN:
        return None
    if _is_erhua(core):
        readings = _segment_readings(_han_run(core))
        base = readings[-2]
        if base is None:
            return None
        final, tone = _sound_parts(base)
        return LineSound(core[-2:], base + "r", final, tone, _FINAL_TO_GROUP[scheme].get(final))
    reading = last_reading(core)
    if reading is None:
        return None
    final, tone = _sound_parts(reading)
    return LineSound(core[-1], reading, final, tone, _FINAL_TO_GROUP[scheme].get(final))


def analyze_line(line: str, scheme: str = "shisanzhe") -> LineSound | None:
    check_scheme(scheme)
    return analyze_core(sung_core(line), scheme)


def rhyme_group(line: str, scheme: str = "shisanzhe") -> str | None:
    sound = analyze_line(line, scheme)
    return sound.group if sound else None


def line_groups(lines: list[str], scheme: str = "shisanzhe") -> list[str | None]:
    """Batch ``rhyme_group``: the per-line work inlined, readings mapped through a cache."""
    table = _FINAL_TO_GROUP[check_scheme(scheme)]
    group_of: dict[str, str | None] = {}
    out: list[str | None] = []
    default_reading = _DEFAULT_READING
    context_chars = _CONTEXT_CHARS
    for line in lines:
        core = sung_core(line)
        if not core or char_kind(core[-1]) != _HAN:
            out.append(None)
            continue
        if core[-1] == "儿" and _is_erhua(core):
            sound = analyze_core(core, scheme)
            out.append(sound.group if sound else None)
            continue
        char = core[-1]
        reading = default_reading.get(char) if char not in context_chars else last_reading(core)
        if reading is None:
            out.append(None)
            continue
        group = group_of.get(reading, ...)
        if group is ...:
            group = group_of[reading] = table.get(_sound_parts(reading)[0])
        out.append(group)
    return out


def char_sound(char: str) -> list[tuple[str, str, int]]:
    """All readings of one hanzi as (pinyin with tone marks, final, tone); [] if none."""
    if len(char) != 1 or ord(char) not in PINYIN_DICT:
        return []
    return [(r, *_sound_parts(r)) for r in PINYIN_DICT[ord(char)].split(",")]
