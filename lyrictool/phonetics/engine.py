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

Two things correct pypinyin where lyrics end differently from the prose its dictionary was
built on (issue 14; each entry and rule carries its reason):

* ``PHRASE_FIXES``: a few phrases pypinyin lacks or misreads, added to pypinyin's own phrase
  dictionary (the same dictionary ``load_phrases_dict`` extends), so whole-line pypinyin in this
  process reads them the same way;
* ``line_final_reading``: reading rules for the last character of a line that no phrase can
  express (了 after 得/不 is liǎo, 还 at the end is huán, 地 after a reduplicated adverb is de ...).

``bench/rhyme_speed.py`` checks that this equals the whole-line baseline (pypinyin with the phrase
fixes, then the same line-final rules) on every 宋词 line.
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

#: ...unless a longer word makes the 儿 儿化 again: 小孩儿 xiǎoháir, not the full 孩儿 hái'ér.
ERHUA_WORDS = frozenset({"小孩儿", "男孩儿", "女孩儿"})

#: Phrases pypinyin's phrase dictionary (0.55) lacks or reads wrongly at the end of a lyric line:
#: phrase -> (reading, reason).  Readings follow 《现代汉语词典》 (第7版).  Added to pypinyin's
#: PHRASES_DICT and its segmenter when this module is imported.
PHRASE_FIXES: dict[str, tuple[str, str]] = {
    "万重": ("wàn chóng", "重 chóng is the measure word 'layer' after a numeral (万重山); pypinyin has 九重 but not 万重/千重"),
    "千重": ("qiān chóng", "as 万重"),
    "几重": ("jǐ chóng", "as 万重"),
    "几行": ("jǐ háng", "行 háng is the measure word 'line, row' after a numeral; pypinyin reads the lone 行 xíng"),
    "又一行": ("yòu yī háng", "一行又一行 'row after row'; pypinyin's 一行 is yīxíng 'a party (of travellers)'"),
    "不在行": ("bù zài háng", "在行 zàiháng 'expert' is in pypinyin, but its segmenter takes 不在 first and leaves 行 xíng"),
    "同行": ("tóng xíng", "同行 tóngxíng 'travel together' is the lyric sense; pypinyin has only tóngháng 'same trade'"),
    "掉色": ("diào shǎi", "掉色 diàoshǎi 'lose colour' (现代汉语词典); pypinyin reads the lone 色 sè"),
    "不得了": ("bù dé liǎo", "不得了 bùdéliǎo; pypinyin has bù dé le"),
    "一行行": ("yī háng háng", "'row upon row' (泪一行行); pypinyin segments 一行 yīxíng + 行"),
    "爱一行": ("ài yī háng", "干一行，爱一行 'love the trade you are in': 行 háng 'trade'"),
    "好觉": ("hǎo jiào", "睡个好觉 'a good sleep': 觉 jiào as in 睡觉 午觉 懒觉 (pypinyin has those, not 好觉)"),
    "千万重": ("qiān wàn chóng", "as 万重; without it the segmenter takes 千万 'ten million' and leaves 重 alone"),
}


def _load_phrase_fixes() -> None:
    # What pypinyin.load_phrases_dict does, except that it retrains the segmenter on all ~400k
    # phrases (0.08 s); training it on the new phrases alone gives the same prefix set.
    new = {phrase: [[syllable] for syllable in reading.split()] for phrase, (reading, _) in PHRASE_FIXES.items()}
    PHRASES_DICT.update(new)
    mmseg.seg.train(new)


_load_phrase_fixes()
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
# char -> the lengths of those phrases that end in it, longest first: the only suffixes of a
# line worth looking up (most context characters end phrases of one or two lengths).
_lengths: dict[str, set[int]] = {}
for _phrase in _PHRASE_LAST:
    _lengths.setdefault(_phrase[-1], set()).add(len(_phrase))
_PHRASE_LAST_LENGTHS = {c: tuple(sorted(ks, reverse=True)) for c, ks in _lengths.items()}


# --- line-final reading rules ----------------------------------------------------------------
#
# Each rule reads the last character of a line from what comes before it, where no phrase of
# pypinyin's dictionary can (forward maximum matching segments 好不了 as 好不 + 了).  A rule gets
# the line (without trailing punctuation) and pypinyin's reading of its last character, and
# returns the reading to use.  Sources: 《现代汉语词典》 (第7版) for the readings.

#: Words ending in 得 whose 得 belongs to the word, so a 了 after them is the particle le
#: (我记得了 'now I remember'), not the potential complement liǎo (算得了 'can count as').
DE_WORDS = frozenset({
    "记得", "懂得", "觉得", "晓得", "认得", "值得", "获得", "取得", "舍得", "使得", "显得", "免得", "省得",
    "难得", "赢得", "懒得", "落得", "应得", "只得", "总得", "非得", "博得", "求得", "所得", "心得",
    "记不得", "怪不得", "恨不得", "巴不得", "舍不得", "由不得", "顾不得", "怨不得",
})

#: Degree words before a line-final 长: the adjective cháng 'long' (好长 很长 太长 越长), not the
#: verb zhǎng 'grow' (pypinyin's default for a lone 长).
DEGREE_WORDS = frozenset("好很太更越最多真挺还够蛮特不么那这变")  # 变长 'get longer'

#: Characters whose default reading in pypinyin is a noun reading that occurs only inside words its
#: phrase dictionary has (宝藏 西藏 zàng; 子弹 炸弹 dàn): when no phrase ends the line with them,
#: they are the verb (心里藏 cáng, 轻轻弹 tán).
VERB_WHEN_ALONE = {"藏": "cáng", "弹": "tán"}

#: Sentence-final particles whose reading pypinyin gives with a full tone or another reading
#: when they stand alone: at the end of a line they are the particle, in the neutral tone.
PARTICLE_READINGS = {"咯": "lo", "喽": "lou", "哟": "yo"}


def _rule_le(core: str, reading: str) -> str:
    # 了 liǎo as a potential complement: V得了 / V不了 ('can / cannot manage'), e.g. 受不了, 算得了.
    if len(core) >= 3 and core[-2] in "得不" and not any(core.endswith(w + "了") for w in DE_WORDS):
        return "liǎo"
    return reading


def _rule_zhe(core: str, reading: str) -> str:
    # 着 zháo as a result complement after 得/不: 睡不着, 猜不着, 用得着 ('reach, manage to').
    if len(core) >= 3 and core[-2] in "得不":
        return "zháo"
    return reading


def _rule_huan(core: str, reading: str) -> str:
    # 还 hái is an adverb and stands before its verb; at the end of a line 还 is the verb huán
    # 'give back, return' (要还, 一去不还, 何日还).
    return "huán" if len(core) >= 2 else reading


def _rule_di(core: str, reading: str) -> str:
    # 地 after a reduplicated syllable (静静地, 悄悄地, 慢吞吞地) is the adverbial particle de;
    # the noun dì never follows one.
    if len(core) >= 3 and core[-2] == core[-3] and char_kind(core[-2]) == _HAN:
        return "de"
    return reading


#: Numerals before a line-final 行: the measure word háng 'line, row' (一行 两行 千行泪, 雁一行).
NUMERALS = frozenset("一二两三四五六七八九十百千万几数")


def _rule_xing(core: str, reading: str) -> str:
    if len(core) >= 2 and core[-2] in NUMERALS and not core.endswith("五行"):  # 五行 wǔxíng, the five elements
        return "háng"
    return reading


def _rule_jue(core: str, reading: str) -> str:
    # 睡觉 is a separable word (离合词): 睡个觉, 睡一觉, 睡了觉 keep 觉 jiào 'sleep'; 睡…惊觉, 睡…未觉
    # are jué 'wake', so only a measure word or 了 right before 觉 counts.
    return "jiào" if len(core) >= 3 and core[-2] in "个一了" and "睡" in core[-5:-2] else reading


def _rule_chang(core: str, reading: str) -> str:
    return "cháng" if len(core) >= 2 and core[-2] in DEGREE_WORDS else reading


def _rule_particle(core: str, reading: str) -> str:
    char = core[-1]
    if reading == _DEFAULT_READING.get(char) and (len(core) < 2 or core[-2] != char):
        return PARTICLE_READINGS[char]  # 咯 alone is the particle lo; 咯咯 is laughter, gēgē
    return reading


def _rule_verb_alone(core: str, reading: str) -> str:
    n = len(core)
    if any(core[n - k :] in PHRASES_DICT for k in range(2, min(_MAX_PHRASE, n) + 1)):
        return reading  # a word of pypinyin's dictionary ends the line: its reading stands
    return VERB_WHEN_ALONE[core[-1]]


LINE_FINAL_RULES = {
    "了": _rule_le,
    "着": _rule_zhe,
    "还": _rule_huan,
    "地": _rule_di,
    "长": _rule_chang,
    "行": _rule_xing,
    "觉": _rule_jue,
    **{p: _rule_particle for p in PARTICLE_READINGS},
    **{c: _rule_verb_alone for c in VERB_WHEN_ALONE},
}
_SLOW_CHARS = _CONTEXT_CHARS | frozenset(LINE_FINAL_RULES)


def line_final_reading(core: str, reading: str | None) -> str | None:
    """Apply the line-final rules to pypinyin's ``reading`` of ``core``'s last character."""
    rule = LINE_FINAL_RULES.get(core[-1]) if core else None
    if rule is None or reading is None:
        return reading
    return rule(core, reading)


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


def _pypinyin_last(core: str) -> str | None:
    """pypinyin's reading of ``core``'s last character (a hanzi) in the context of the line."""
    char = core[-1]
    lengths = _PHRASE_LAST_LENGTHS.get(char)
    if lengths is not None:
        n = len(core)
        for k in lengths:
            if k <= n and core[n - k :] in _PHRASE_LAST:
                # a phrase could read it differently: segment the line as pypinyin does
                return _segment_readings(_han_run(core))[-1]
    return _DEFAULT_READING.get(char)


def last_reading(core: str) -> str | None:
    """The reading of ``core``'s last character (a hanzi) in context; None if it has none."""
    return line_final_reading(core, _pypinyin_last(core))


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
        and (core[-2:] not in FULL_ER_WORDS or core[-3:] in ERHUA_WORDS)
    )


#: Sentence-final particles that the opt-in 虚字脚 rule (``skip_particles=True``) skips when they are
#: read in the neutral tone: the older 曲艺 practice of rhyming on the syllable before a particle.
#: Off by default: pop lyrics rhyme on the particle itself (docs/rhyme-schemes.md).
PARTICLES = frozenset("吗吧啊呀啦哇了的地着呢嘛呗咯喽哟嘞啰")


def drop_particles(core: str) -> str:
    """``core`` without its trailing neutral-tone particles (at least one sung character stays)."""
    end = len(core)
    while end > 1 and core[end - 1] in PARTICLES and char_kind(core[end - 2]) == _HAN:
        reading = last_reading(core[:end])
        if reading is None or _sound_parts(reading)[1] != 5:
            break  # a full reading (了 liǎo, 的 dì, 着 zháo) is not a particle
        end -= 1
    return core[:end]


def analyze_core(core: str, scheme: str, skip_particles: bool = False) -> LineSound | None:
    if not core or char_kind(core[-1]) != _HAN:
        return None
    if skip_particles:
        core = drop_particles(core)
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


def analyze_line(line: str, scheme: str = "shisanzhe", skip_particles: bool = False) -> LineSound | None:
    check_scheme(scheme)
    return analyze_core(sung_core(line), scheme, skip_particles)


#: scheme -> {reading: rhyme group}, filled as readings are met: at most one entry per syllable
#: pypinyin knows (about 1,500), so bounded, and never per line.
_READING_GROUP: dict[str, dict[str, str | None]] = {scheme: {} for scheme in _FINAL_TO_GROUP}


def rhyme_group(line: str, scheme: str = "shisanzhe", skip_particles: bool = False) -> str | None:
    """``analyze_line(...).group`` without building the LineSound: the per-line hot path.

    A line that ends in a hanzi (most do) skips ``sung_core``; a character no phrase and no
    line-final rule reads differently is one dict lookup; the group of a reading is cached.
    """
    groups = _READING_GROUP.get(scheme)
    if groups is None:
        check_scheme(scheme)  # raises UserError: every known scheme has its cache
    if not line:
        return None
    char = line[-1]
    if char_kind(char) == _HAN:
        core = line
    else:
        core = sung_core(line)
        if not core:
            return None
        char = core[-1]
        if char_kind(char) != _HAN:
            return None
    if skip_particles:
        core = drop_particles(core)
        char = core[-1]
    if char == "儿" and _is_erhua(core):
        sound = analyze_core(core, scheme)
        return sound.group if sound else None
    reading = _DEFAULT_READING.get(char) if char not in _SLOW_CHARS else last_reading(core)
    if reading is None:
        return None
    group = groups.get(reading, _MISSING)
    if group is _MISSING:
        group = groups[reading] = _FINAL_TO_GROUP[scheme].get(_sound_parts(reading)[0])
    return group


_MISSING = object()


def line_groups(lines: list[str], scheme: str = "shisanzhe", skip_particles: bool = False) -> list[str | None]:
    """``rhyme_group`` of every line."""
    check_scheme(scheme)
    return [rhyme_group(line, scheme, skip_particles) for line in lines]


def char_sound(char: str) -> list[tuple[str, str, int]]:
    """All readings of one hanzi as (pinyin with tone marks, final, tone); [] if none."""
    if len(char) != 1 or ord(char) not in PINYIN_DICT:
        return []
    return [(r, *_sound_parts(r)) for r in PINYIN_DICT[ord(char)].split(",")]
