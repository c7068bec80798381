"""Rhyme tables: which pinyin finals rhyme together under each scheme.

This is the one home of the rhyme systems.  It is pure data (no pypinyin import) so that
validating a ``rhyme`` control stays cheap.

Finals are written the way pypinyin writes them with ``Style.FINALS, strict=True`` (ü is ``v``:
``ve van vn``; ``uei iou uen`` are the full forms behind ``ui iu un``), plus ``-i`` for the
apical vowel of zhi chi shi ri zi ci si (pypinyin returns plain ``i``; the engine recovers it
from the initial).  Over all 41,923 characters in pypinyin 0.55 the strict finals take 38 values:
the 36 of the 汉语拼音方案, ``ê`` (欸 ê̄, 8 readings) and the empty string (the syllabic nasals
of 嗯 ń/ňg and 呣 ḿ).  Syllabic nasals belong to no rhyme group in any scheme here: a line that ends
in 嗯 has no group (documented in docs/rhyme-schemes.md).
"""

from __future__ import annotations

#: The schemes ``rhyme_group`` and the metrics understand, default first.
SCHEMES: tuple[str, ...] = ("shisanzhe", "zhonghua_xinyun", "zhonghua_tongyun", "final")

#: All finals a syllable can have (after apical recovery), the ``final`` scheme's groups.
FINALS: tuple[str, ...] = (
    "a", "ia", "ua",
    "o", "uo", "e",
    "ie", "ve", "ê",
    "i", "-i", "v", "er",
    "u",
    "ai", "uai",
    "ei", "uei",
    "ao", "iao",
    "ou", "iou",
    "an", "ian", "uan", "van",
    "en", "in", "uen", "vn",
    "ang", "iang", "uang",
    "eng", "ing", "ueng", "ong", "iong",
)

# Each table: group name -> finals, in the scheme's traditional order.
#
# 十三辙 (the thirteen tracks of Northern opera and folk song, the usual system for sung lyrics).
# Source: the standard 十三辙 table as given in e.g. 《现代汉语词典》附录 / 《中华韵典》, with
# the finals of REFERENCE.md ("Rhyme systems").  ê goes with ie/üe (乜斜 is the ê track); the
# apical -i, i, ü and er all sing as 一七.
SHISANZHE: dict[str, tuple[str, ...]] = {
    "发花": ("a", "ia", "ua"),
    "梭波": ("o", "uo", "e"),
    "乜斜": ("ie", "ve", "ê"),
    "一七": ("i", "-i", "v", "er"),
    "姑苏": ("u",),
    "怀来": ("ai", "uai"),
    "灰堆": ("ei", "uei"),
    "由求": ("ou", "iou"),
    "遥条": ("ao", "iao"),
    "言前": ("an", "ian", "uan", "van"),
    "人辰": ("en", "in", "uen", "vn"),
    "江阳": ("ang", "iang", "uang"),
    "中东": ("eng", "ing", "ueng", "ong", "iong"),
}

# 中华新韵 (14 rhymes), 中华诗词学会《中华新韵（十四韵）》2005.  Like 十三辙, except that the
# apical -i (支) is its own rhyme; i, ü and er form 齐.
ZHONGHUA_XINYUN: dict[str, tuple[str, ...]] = {
    "麻": ("a", "ia", "ua"),
    "波": ("o", "uo", "e"),
    "皆": ("ie", "ve", "ê"),
    "开": ("ai", "uai"),
    "微": ("ei", "uei"),
    "豪": ("ao", "iao"),
    "尤": ("ou", "iou"),
    "寒": ("an", "ian", "uan", "van"),
    "文": ("en", "in", "uen", "vn"),
    "唐": ("ang", "iang", "uang"),
    "庚": ("eng", "ing", "ueng", "ong", "iong"),
    "齐": ("i", "v", "er"),
    "支": ("-i",),
    "姑": ("u",),
}

# 中华通韵 (16 rhymes), 教育部/国家语委《中华通韵》(2019, 试行).  e joins ie/üe (鹅); -i joins
# i (衣); ü (迂) and er (儿) are their own rhymes; eng (英) and ong (雍) split.
ZHONGHUA_TONGYUN: dict[str, tuple[str, ...]] = {
    "啊": ("a", "ia", "ua"),
    "喔": ("o", "uo"),
    "鹅": ("e", "ie", "ve", "ê"),
    "衣": ("i", "-i"),
    "乌": ("u",),
    "迂": ("v",),
    "哀": ("ai", "uai"),
    "欸": ("ei", "uei"),
    "熬": ("ao", "iao"),
    "欧": ("ou", "iou"),
    "安": ("an", "ian", "uan", "van"),
    "恩": ("en", "in", "uen", "vn"),
    "昂": ("ang", "iang", "uang"),
    "英": ("eng", "ing", "ueng"),
    "雍": ("ong", "iong"),
    "儿": ("er",),
}

TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "shisanzhe": SHISANZHE,
    "zhonghua_xinyun": ZHONGHUA_XINYUN,
    "zhonghua_tongyun": ZHONGHUA_TONGYUN,
    "final": {f: (f,) for f in FINALS},
}

# The suffix each scheme's names are often written with ("江阳辙", "唐韵", "英韵").
_NAME_SUFFIXES = ("辙", "韵", "部")

# Other spellings of finals users type: the non-strict pinyin forms and ü.
_FINAL_ALIASES = {"ui": "uei", "iu": "iou", "un": "uen", "apical": "-i", "ii": "-i", "eh": "ê"}

_FINAL_TO_GROUP: dict[str, dict[str, str]] = {
    scheme: {final: group for group, finals in table.items() for final in finals}
    for scheme, table in TABLES.items()
}

for _scheme, _table in TABLES.items():  # every scheme covers every final exactly once
    assert sorted(f for fs in _table.values() for f in fs) == sorted(FINALS), _scheme


# --- near rhymes -----------------------------------------------------------------------------
#
# A near rhyme is a pair of groups that the scheme in use keeps apart but that Mandarin songs
# rhyme together.  Two groups of a scheme are near when they hold a near pair of finals; two
# kinds of pair, both documented in docs/rhyme-schemes.md ("Near rhymes"):
#
# * front and back nasals, which pop lyricists rhyme freely (人辰 with 中东) and which many
#   speakers, Taiwan and southern Mandarin especially, do not distinguish: en/eng, in/ing, and
#   uen/vn with their back counterparts ueng/ong and iong (ong is ueng after an initial).
#   an/ang (言前/江阳) are not included: they stay apart in Taiwan and southern Mandarin too;
# * any two finals that one of the three standard systems above puts in the same group: what is
#   a different group in one scheme is a recognised rhyme in another (e with ie/üe: 中华通韵's 鹅;
#   the apical -i with i: 十三辙's 一七; eng with ong: 十三辙's 中东).
#
# The relation is between groups (under 十三辙: 人辰~中东 and 梭波~乜斜), so a line rhymes near with
# every line of a near group, as a lyricist who merges two groups treats them.  It is not chained:
# near groups of near groups are not near.

#: The strictness levels ``rhymes`` and the metrics accept; strict is the default.
STRICTNESS: tuple[str, ...] = ("strict", "near")

#: Front/back nasal pairs (see above).
NASAL_PAIRS: tuple[tuple[str, str], ...] = (("en", "eng"), ("in", "ing"), ("uen", "ueng"), ("uen", "ong"), ("vn", "iong"))


def _near_pairs() -> frozenset[frozenset[str]]:
    pairs = {frozenset(p) for p in NASAL_PAIRS}
    for scheme in ("shisanzhe", "zhonghua_xinyun", "zhonghua_tongyun"):
        for finals in TABLES[scheme].values():
            pairs.update(frozenset((a, b)) for a in finals for b in finals if a != b)
    return frozenset(pairs)


#: Unordered pairs of distinct finals that are near rhymes.
NEAR_FINALS: frozenset[frozenset[str]] = _near_pairs()

_NEAR_GROUPS: dict[str, frozenset[frozenset[str]]] = {
    scheme: frozenset(
        frozenset((g, h))
        for g, fg in table.items()
        for h, fh in table.items()
        if g != h and any(frozenset((a, b)) in NEAR_FINALS for a in fg for b in fh)
    )
    for scheme, table in TABLES.items()
}


def check_strictness(strictness: str) -> str:
    """Return ``strictness`` if known, else raise UserError naming the choices."""
    if strictness not in STRICTNESS:
        from lyrictool.errors import UserError

        raise UserError(f"unknown rhyme strictness {strictness!r}; choose one of: {', '.join(STRICTNESS)}")
    return strictness


def groups_rhyme(a: str | None, b: str | None, scheme: str = "shisanzhe", strictness: str = "strict") -> bool:
    """Whether two groups of ``scheme`` rhyme: the same group, or (``near``) a near pair of groups."""
    if a is None or b is None:
        return False
    return a == b or (strictness == "near" and frozenset((a, b)) in _NEAR_GROUPS[scheme])


def near_groups(scheme: str = "shisanzhe") -> list[tuple[str, str]]:
    """The pairs of groups of ``scheme`` that rhyme as near rhymes, in table order."""
    names = list(TABLES[check_scheme(scheme)])
    return [(g, h) for i, g in enumerate(names) for h in names[i + 1 :] if frozenset((g, h)) in _NEAR_GROUPS[scheme]]


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if known, else raise UserError naming the choices."""
    if scheme not in TABLES:
        from lyrictool.errors import UserError

        raise UserError(f"unknown rhyme scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    return scheme


def group_names(scheme: str = "shisanzhe") -> list[str]:
    """The group names of ``scheme`` in traditional order (for ``final``: the finals)."""
    return list(TABLES[check_scheme(scheme)])


def final_to_group(final: str, scheme: str = "shisanzhe") -> str | None:
    """The group of a strict final (apical vowel written ``-i``) under ``scheme``; None if none."""
    return _FINAL_TO_GROUP[check_scheme(scheme)].get(final)


def _as_final(value: str) -> str:
    value = value.strip().lower().replace("ü", "v").replace("u:", "v")
    return _FINAL_ALIASES.get(value, value)


def normalize_rhyme(value: str, scheme: str = "shisanzhe") -> str | None:
    """The canonical group name of ``scheme`` that ``value`` names, or None.

    ``value`` may be a group name of the scheme ("江阳"), the name with a common suffix
    ("江阳辙", "唐韵"), a final ("ang", "iang", "ui", "üe") which is mapped to its group, or
    a group of another scheme whose finals all fall in one group of this one ("江阳" -> "唐"
    under zhonghua_xinyun; "一七" has no single 中华新韵 counterpart, so None).
    """
    table = TABLES[check_scheme(scheme)]
    if not isinstance(value, str):
        return None
    name = value.strip()
    known = {g for t in TABLES.values() for g in t}
    for suffix in _NAME_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            name = name[: -len(suffix)]
    if name in table:
        return name
    group = _FINAL_TO_GROUP[scheme].get(_as_final(name))
    if group is not None:
        return group
    # A group of another scheme ("江阳" asked under 中华新韵): its finals must all land in one group.
    for other, other_table in TABLES.items():
        if other != scheme and name in other_table:
            groups = {_FINAL_TO_GROUP[scheme][f] for f in other_table[name]}
            if len(groups) == 1:
                return groups.pop()
    return None
