"""The lyrics document: sections, lines, and the phonetic hints used in training.

A song is plain text.  A line that is only a bracketed tag (``[Verse 1]``, ``[Pre-Chorus]``,
``【副歌】``) or a bare section word with an optional number and colon (``主歌1：``,
``Chorus:``) starts a section; every other non-blank line belongs to the current section.
:func:`render` writes the canonical layout (tag, lines, one blank line between sections).
Hints work on the raw text, line by line, so they keep any layout exactly.

Hints (see docs/metrics.md, "Phonetic hints"): a rhyme-group marker in full-width tortoise-shell
brackets, ``〔江阳〕``, inserted before the last sung character of each lyric line
(``line_end``) or at the start of it (``line_start``).  The model sees which group the line
commits to before it writes the rhyming character; :func:`strip_hints` removes them exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lyrictool.errors import UserError

#: Canonical section names, in the order they usually appear.
SECTION_NAMES = (
    "intro",
    "verse",
    "pre-chorus",
    "chorus",
    "post-chorus",
    "hook",
    "rap",
    "bridge",
    "interlude",
    "outro",
)

# Spellings seen in lyric sheets, lower-cased, without spaces, dashes or numbering.
_SECTION_ALIASES = {
    "intro": "intro", "前奏": "intro", "引子": "intro", "序曲": "intro", "开场": "intro",
    "verse": "verse", "主歌": "verse", "主歌部分": "verse", "段落": "verse",
    "prechorus": "pre-chorus", "pre": "pre-chorus", "导歌": "pre-chorus", "预副歌": "pre-chorus",
    "副歌前": "pre-chorus", "过渡句": "pre-chorus",
    "chorus": "chorus", "refrain": "chorus", "副歌": "chorus", "副歌部分": "chorus",
    "高潮": "chorus",
    "postchorus": "post-chorus", "副歌后": "post-chorus",
    "hook": "hook", "记忆点": "hook",
    "rap": "rap", "说唱": "rap",
    "bridge": "bridge", "桥段": "bridge", "桥": "bridge", "过渡段": "bridge",
    "interlude": "interlude", "间奏": "interlude", "过门": "interlude", "instrumental": "interlude",
    "solo": "interlude",
    "outro": "outro", "尾奏": "outro", "尾声": "outro", "结尾": "outro", "coda": "outro",
    "ending": "outro",
}

_BRACKETED = re.compile(r"^\s*(?:\[([^\[\]\n]*)\]|【([^【】\n]*)】)\s*$")
# Numbering after the name: "Verse 1", "主歌A", "副歌二", "Chorus x2", "(重复)".
_NUMBERING = re.compile(
    r"(?:[\s\-_]+[a-z]|(?<=[^\x00-\x7f])[a-z]"
    r"|[\s\-_]*(?:[0-9]+|[一二三四五六七八九十]+|x[0-9]+|[（(][^)）]*[)）]))$"
)
_BARE_TAG = re.compile(r"^\s*([^\s:：\[\]【】]{1,16}?(?:\s*[0-9A-Za-z一二三四五六七八九十]{1,3})?)\s*[:：]?\s*$")


def canonical_section(tag: str) -> str | None:
    """The canonical name of a section tag ("[Verse 1]" -> "verse", "副歌" -> "chorus"), or None."""
    if not isinstance(tag, str):
        return None
    m = _BRACKETED.match(tag)
    name = (m.group(1) if m.group(1) is not None else m.group(2)) if m else tag
    name = name.strip().strip(":：").strip().lower()
    for _ in range(2):  # "Verse 2 (x2)"
        name = _NUMBERING.sub("", name).strip()
    name = re.sub(r"[\s\-_]+", "", name)
    if name.endswith(("solo", "独奏")):  # "Guitar Solo", "钢琴独奏"
        return "interlude"
    return _SECTION_ALIASES.get(name)


def is_tag_line(line: str) -> bool:
    """A line that opens a section: any bracketed tag, or a bare known section name."""
    if _BRACKETED.match(line):
        return True
    return bool(_BARE_TAG.match(line)) and canonical_section(line) is not None


_tag_line = is_tag_line  # the name serve/postprocess.py imports


@dataclass
class Section:
    """A run of lyric lines under one tag."""

    name: str | None = None  # canonical name (SECTION_NAMES), None when untagged or unknown
    tag: str | None = None  # the tag line as written, e.g. "[Verse 1]"; None before the first tag
    lines: list[str] = field(default_factory=list)  # lyric lines, stripped, never blank


@dataclass
class Lyrics:
    sections: list[Section] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        """All lyric lines (tags excluded), in order."""
        return [line for section in self.sections for line in section.lines]


def parse(text: str) -> Lyrics:
    """Split ``text`` into sections at tag lines; lines are stripped, blank lines dropped.

    Never raises on a str.  Lines before the first tag form an untagged section.
    """
    sections: list[Section] = []
    current: Section | None = None
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line:
            continue
        if is_tag_line(line):
            current = Section(name=canonical_section(line), tag=line, lines=[])
            sections.append(current)
        else:
            if current is None:
                current = Section()
                sections.append(current)
            current.lines.append(line)
    return Lyrics(sections)


def render(lyrics: Lyrics) -> str:
    """The canonical text of ``lyrics``: each section's tag, its lines, a blank line between.

    ``parse(render(doc)) == doc`` for every parsed document, and ``render(parse(text)) == text``
    for text already in this layout.
    """
    blocks = []
    for section in lyrics.sections:
        head = [section.tag] if section.tag is not None else []
        blocks.append("\n".join(head + section.lines))
    return "\n\n".join(blocks)


# --- phonetic hints ------------------------------------------------------------------------

HINT_MODES = ("none", "line_end", "line_start")
HINT_OPEN, HINT_CLOSE = "〔", "〕"


def _hint_pattern():
    from lyrictool.phonetics.tables import TABLES

    names = sorted({g for table in TABLES.values() for g in table}, key=len, reverse=True)
    return re.compile(HINT_OPEN + "(?:" + "|".join(map(re.escape, names)) + ")" + HINT_CLOSE)


_HINT = _hint_pattern()


def add_hints(text: str, mode: str = "line_end", scheme: str = "shisanzhe") -> str:
    """Mark each lyric line's rhyme group, e.g. ``月光洒满了〔江阳〕窗`` (mode ``line_end``).

    Tags, blank lines and lines without a group get no hint.  Raises UserError when ``text``
    already contains a hint (a group name in 〔〕), because stripping would remove it too.
    Other 〔...〕 text (an editor's note such as 〔态〕) is kept and survives the round trip:
    a hint is self-contained, so the only hints in the output are the ones added here.
    """
    from lyrictool.phonetics import engine
    from lyrictool.phonetics.tables import check_scheme

    if mode not in HINT_MODES:
        raise UserError(f"unknown hint mode {mode!r}; choose one of: {', '.join(HINT_MODES)}")
    check_scheme(scheme)
    if mode == "none":
        return text
    found = _HINT.search(text)
    if found:
        raise UserError(
            f"the lyrics already contain a phonetic hint {found.group()!r}; strip hints first "
            f"(strip_hints) or write that text without the {HINT_OPEN}{HINT_CLOSE} brackets"
        )
    out: list[str] = []
    for line in text.split("\n"):
        if not line.strip() or is_tag_line(line):
            out.append(line)
            continue
        core = engine.sung_core(line)
        sound = engine.analyze_core(core, scheme)
        if sound is None or sound.group is None:
            out.append(line)
            continue
        marker = HINT_OPEN + sound.group + HINT_CLOSE
        if mode == "line_start":
            out.append(marker + line)
        else:
            at = len(core) - len(sound.char)
            out.append(line[:at] + marker + line[at:])
    return "\n".join(out)


def strip_hints(text: str) -> str:
    """Remove every hint (a group name of any scheme in 〔〕); inverse of :func:`add_hints`."""
    return _HINT.sub("", text)


# What a model trained with hints can leave behind when it gets a marker wrong: a made-up group name in the
# brackets (〔乜阳〕) or half a marker.  Only for model output: a user's own 〔...〕 text is never touched by it.
_HINT_RESIDUE = re.compile(HINT_OPEN + r"[^" + HINT_OPEN + HINT_CLOSE + r"\n]{0,4}" + HINT_CLOSE + "|[" + HINT_OPEN
                           + HINT_CLOSE + "]")


def strip_generated_hints(text: str) -> str:
    """Remove hints from model output, including malformed ones (any short 〔...〕 and stray brackets)."""
    return _HINT_RESIDUE.sub("", strip_hints(text))


def has_hints(text: str) -> bool:
    """True when ``text`` contains a hint marker."""
    return _HINT.search(text) is not None
