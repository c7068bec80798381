"""Post-processing of generated lyrics: strip hints, normalise tags and punctuation, check the controls.

Generation is streamed through a :class:`LineAssembler` line by line, for streaming and non-streaming requests
alike, so a streamed answer is exactly the non-streamed one cut into lines.  The layout it writes is the
canonical one of :func:`lyrictool.lyrics.render`: a section tag, its lines, a blank line before the next tag.
"""

from __future__ import annotations

import re
from typing import Any

# Half-width punctuation a model (or a user's data) mixes into Chinese lines -> the full-width form.
_FULL_WIDTH = str.maketrans({",": "，", ".": "。", "!": "！", "?": "？", ";": "；", ":": "：", "~": "～"})
_PUNCT_RUN = re.compile(r"([，。！？；：、～…])\1+")
_TRAILING = re.compile(r"[\s，。、；：,.;:]+$")  # lyric sheets do not end lines with a comma or full stop
_HAN = re.compile(r"[\u4e00-\u9fff]")


def _tag_text(name: str) -> str:
    return "[" + "-".join(part.capitalize() for part in name.split("-")) + "]"


def clean_line(line: str) -> tuple[str, str] | None:
    """One generated line -> ("tag", "[Chorus]") | ("line", text) | None (blank or nothing left)."""
    from lyrictool.lyrics import canonical_section, is_tag_line, strip_generated_hints

    line = strip_generated_hints(line).strip()
    if not line:
        return None
    if is_tag_line(line):
        name = canonical_section(line)
        return ("tag", _tag_text(name)) if name else None  # an unknown "[...]" is model noise, not a section
    if _HAN.search(line):  # only Chinese lines: "Hello, world." keeps its ASCII punctuation
        line = line.translate(_FULL_WIDTH)
    line = _PUNCT_RUN.sub(r"\1", line)
    line = _TRAILING.sub("", line)
    return ("line", line) if line else None


class LineAssembler:
    """Turns raw generated text, fed in pieces, into clean lyrics text, emitted one finished line at a time.

    ``feed(delta)`` returns the text pieces that became final (each a whole cleaned line with its separator)
    and whether a stop string was reached; ``finish()`` flushes the last line.  ``text`` is everything emitted.
    """

    def __init__(self, stop: list[str] | None = None):
        self.stop = [s for s in (stop or []) if s]
        self.raw = ""
        self.text = ""
        self.stopped = False  # a stop string ended the text
        self._consumed = 0  # raw[:_consumed] has been turned into lines
        self._finished = False

    def _emit(self, raw_line: str) -> str:
        cleaned = clean_line(raw_line)
        if cleaned is None:
            return ""
        kind, value = cleaned
        sep = "" if not self.text else ("\n\n" if kind == "tag" else "\n")
        piece = sep + value
        self.text += piece
        return piece

    def feed(self, delta: str) -> tuple[list[str], bool]:
        if self.stopped or self._finished or not delta:
            return [], self.stopped
        self.raw += delta
        if self.stop:
            hits = [i for i in (self.raw.find(s, max(0, len(self.raw) - len(delta) - len(s))) for s in self.stop)
                    if i >= 0]
            if hits:
                self.raw = self.raw[:min(hits)]
                self.stopped = True
        pieces = []
        while True:
            end = self.raw.find("\n", self._consumed)
            if end < 0:
                break
            piece = self._emit(self.raw[self._consumed:end])
            self._consumed = end + 1
            if piece:
                pieces.append(piece)
        return pieces, self.stopped

    def finish(self) -> str:
        """Flush the unfinished last line; returns its piece ("" if none)."""
        if self._finished:
            return ""
        self._finished = True
        piece = self._emit(self.raw[self._consumed:]) if self._consumed < len(self.raw) else ""
        self._consumed = len(self.raw)
        return piece


def clean_lyrics(raw: str) -> str:
    """The whole post-processing of one finished generation (what :class:`LineAssembler` streams)."""
    assembler = LineAssembler()
    assembler.feed(raw)
    assembler.finish()
    return assembler.text


# --------------------------------------------------------------------------------------------------------------
# Analysis and the controls check

CONTROL_METRIC = {  # control -> the metric that must be 1.0 for it to count as met
    "rhyme": "rhyme_accuracy",
    "scheme": "rhyme_accuracy",
    "structure": "structure_accuracy",
    "line_lengths": "line_length_accuracy",
}


def analyze(text: str, controls: dict[str, Any], scheme: str = "shisanzhe") -> dict[str, Any]:
    """Per-line sound (last sung syllable, final, tone, rhyme group, whether it rhymes as the controls ask), the
    song's metrics, and the controls met."""
    from lyrictool.lyrics import parse
    from lyrictool.metrics import rhyme_line_hits, rhyme_request, song_metrics
    from lyrictool.phonetics import analyze_line, line_groups, syllable_count

    doc = parse(text)
    target, pattern = rhyme_request(controls, scheme)  # read as song_metrics reads them
    sizes = [len(section.lines) for section in doc.sections if section.lines]  # a scheme is scored per section
    hits = rhyme_line_hits(line_groups(doc.lines, scheme), target, pattern, sizes)
    lines = []
    for section in doc.sections:
        for line in section.lines:
            sound = analyze_line(line, scheme)
            lines.append({
                "section": section.name,
                "text": line,
                "syllables": syllable_count(line),
                "char": sound.char if sound else None,
                "pinyin": sound.pinyin if sound else None,
                "final": sound.final if sound else None,
                "tone": sound.tone if sound else None,
                "rhyme_group": sound.group if sound else None,
                "rhymes_as_asked": hits[len(lines)],  # None: the controls ask nothing of this line's rhyme
            })
    metrics = song_metrics(text, controls, scheme)
    met: dict[str, bool] = {}
    for control, metric in CONTROL_METRIC.items():
        if controls.get(control):
            met[control] = metrics.get(metric) == 1.0
    met["format"] = metrics["format_validity"] == 1.0
    met["all"] = all(met.values())
    return {"lines": lines, "metrics": metrics, "controls_met": met}

