"""Objective lyrics metrics: rhyme, rhythm, structure, format and diversity.

Every metric is defined, with its formula and a worked example, in docs/metrics.md.  Per song,
:func:`song_metrics` returns a flat dict; a metric whose control was not requested is None.
:func:`aggregate` averages songs.  Pure Python on the fast phonetics path, so rule rewards for
rejection sampling and RL can call it per sample.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise
from typing import Any

from lyrictool.controls import controls_dict
from lyrictool.phonetics import main_group

#: The per-song values in [0, 1] that :func:`aggregate` averages, in report order.
RATE_METRICS = (
    "rhyme_accuracy",
    "rhyme_density",
    "rhyme_accuracy_near",
    "rhyme_density_near",
    "line_length_accuracy",
    "line_length_accuracy_pm1",
    "structure_accuracy",
    "format_validity",
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "repeated_lines",
)
#: Per-song counts that :func:`aggregate` also averages.
COUNT_METRICS = ("n_lines", "n_sections", "n_syllables")

# Text a model leaks when it echoes its prompt or chat template instead of writing lyrics.
_LEAK = re.compile(
    r"<\|[a-z_]+\|>|</?s>|\[/?INST\]|^\s*(?:请写一首|风格[：:]|主题[：:]|押韵[：:]|韵式[：:]|结构[：:]"
    r"|每行字数[：:]|标题[：:])|^\s*(?:genre|topic|rhyme|scheme|structure|line_lengths)\s*[:=]"
    r"|^\s*[{\[]\s*\"",
    re.IGNORECASE | re.MULTILINE,
)
_CHAR_LOOP = re.compile(r"(.{1,4}?)\1{7,}")  # a unit of 1-4 chars repeated 8+ times in a row
MAX_LINE_SYLLABLES = 64  # longer "lines" are run-on text, not lyric lines
MAX_SAME_LINE_RUN = 4  # the same line 5+ times in a row is a loop, not a refrain


def _same_group(a: str | None, b: str | None) -> bool:
    return a is not None and a == b


def pattern_units(pattern: str, section_sizes: list[int]) -> list[tuple[list[int | None], str]]:
    """The units a ``scheme`` control is scored on: (line index per letter, letters) pairs.

    Letters are local to a unit (A in the chorus need not rhyme with A in the verse).  A pattern
    with sections separated by ``|`` or ``/`` ("AABB|ABAB") gives one unit per section (by the
    song's sections when their numbers agree, else by consecutive lines); a single pattern as long
    as the song (or longer: missing lines are None) is one unit, letters shared by the whole
    song; a single shorter pattern ("AABB") applies to each section, repeated over its lines in
    chunks of the pattern's length.
    """
    segments = ["".join(ch for ch in seg.upper() if not ch.isspace()) for seg in re.split(r"[|/]", pattern)]
    segments = [seg for seg in segments if seg]
    n = sum(section_sizes)
    starts = [sum(section_sizes[:k]) for k in range(len(section_sizes))]
    units: list[tuple[list[int | None], str]] = []
    if len(segments) > 1:
        if len(segments) == len(section_sizes):
            for seg, start, size in zip(segments, starts, section_sizes):
                units.append(([start + j if j < size else None for j in range(len(seg))], seg))
        else:
            start = 0
            for seg in segments:
                units.append(([i if i < n else None for i in range(start, start + len(seg))], seg))
                start += len(seg)
        return units
    if not segments:
        return []
    seg = segments[0]
    if len(seg) >= n:
        return [([i if i < n else None for i in range(len(seg))], seg)]
    for start, size in zip(starts, section_sizes):
        for chunk in range(0, size, len(seg)):
            idx = list(range(start + chunk, start + min(chunk + len(seg), size)))
            units.append((idx, seg[: len(idx)]))
    return units


def _scheme_groups(groups: list[str | None], target: str | None, idx: list[int | None], letters: str,
                   same=_same_group) -> dict[str, str | None]:
    """The group each letter of one pattern unit stands for: the requested one for the first letter, else the
    majority of its lines; None for a letter whose group another letter also rhymes with (letters rhyme apart)."""
    first = next((ch for ch in letters if ch != "X"), None)
    assigned: dict[str, str | None] = {}
    for letter in dict.fromkeys(ch for ch in letters if ch != "X"):
        if letter == first and target is not None:
            assigned[letter] = target
            continue
        ours = [groups[i] for i, ch in zip(idx, letters) if ch == letter and i is not None and groups[i]]
        found = main_group(ours)  # ties: the later line's group, as for the derived rhyme control
        assigned[letter] = found[0] if found else None
    return {letter: g if g is not None and not any(same(g, h) for k, h in assigned.items() if k != letter) else None
            for letter, g in assigned.items()}


def rhyme_line_hits(groups: list[str | None], target: str | None, pattern: str | None,
                    section_sizes: list[int] | None = None, same=_same_group) -> list[bool | None]:
    """Per line: rhymes as asked (True/False), or None where nothing is asked of it (an X, or no rhyme control).

    The per-line view of ``rhyme_accuracy`` (docs/metrics.md): with a scheme, a line must end in its letter's
    group in its pattern unit (per section: ``pattern_units``; the requested group for the first letter, else
    the letter's majority group, which no other letter may share); with only a group, every line must end in
    it.  ``section_sizes`` are the song's lines per section (default: one section); ``same`` compares groups
    (strict equality, or near rhymes).
    """
    n = len(groups)
    if pattern:
        hits: list[bool | None] = [None] * n
        for idx, letters in pattern_units(pattern, section_sizes if section_sizes is not None else [n]):
            assigned = _scheme_groups(groups, target, idx, letters, same)
            for i, ch in zip(idx, letters):
                if ch != "X" and i is not None:
                    hits[i] = assigned[ch] is not None and same(groups[i], assigned[ch])
        return hits
    if target is not None:
        return [same(g, target) for g in groups]
    return [None] * n


def rhyme_request(controls: Any, scheme: str = "shisanzhe") -> tuple[str | None, str | None]:
    """What the controls ask of the rhyme: (target group under ``scheme``, or None; scheme pattern, or None)."""
    from lyrictool.phonetics import normalize_rhyme

    c = controls_dict(controls)
    rhyme = c.get("rhyme")
    target = normalize_rhyme(rhyme, scheme) if isinstance(rhyme, str) else None
    pattern = c.get("scheme") if isinstance(c.get("scheme"), str) and c.get("scheme").strip() else None
    return target, pattern


def _rhyme_accuracy(groups: list[str | None], target: str | None, pattern: str | None,
                    section_sizes: list[int] | None = None, same=_same_group) -> float | None:
    """Share of constrained lines that rhyme as asked (see docs/metrics.md)."""
    n = len(groups)
    if pattern:
        units = pattern_units(pattern, section_sizes if section_sizes is not None else [n])
        # lines the scheme asks for but the song lacks count as misses
        constrained = sum(ch != "X" for _, letters in units for ch in letters)
        correct = sum(hit is True for hit in rhyme_line_hits(groups, target, pattern, section_sizes, same))
        return correct / constrained if constrained else None
    if target is not None:
        return sum(same(g, target) for g in groups) / n if n else 0.0
    return None


def _rhyme_density(groups: list[str | None], same=_same_group) -> float:
    """Share of lines whose group is the song's dominant one (used 2+ times) or a neighbour's."""
    n = len(groups)
    if not n:
        return 0.0
    found = main_group(groups)
    dominant = found[0] if found is not None and found[1] >= 2 else None
    rhyming = 0
    for i, g in enumerate(groups):
        if g is None:
            continue
        if same(g, dominant) or (i and same(groups[i - 1], g)) or (i + 1 < n and same(groups[i + 1], g)):
            rhyming += 1
    return rhyming / n


def _structure_accuracy(sections, wanted: list) -> float:
    """Share of section slots (requested or produced) with the right name and line count."""
    from lyrictool.lyrics import canonical_section

    produced = [s for s in sections if s.lines or s.tag is not None]
    slots = max(len(wanted), len(produced))
    if not slots:
        return 1.0
    correct = 0
    for spec, section in zip(wanted, produced):
        spec = spec.model_dump() if hasattr(spec, "model_dump") else spec
        if not isinstance(spec, dict):
            continue
        name = str(spec.get("section", ""))
        name = canonical_section(name) or canonical_section(f"[{name}]") or name
        lines = spec.get("lines")
        if section.name == name and (lines is None or len(section.lines) == lines):
            correct += 1
    return correct / slots


def _format_issues(text: str, lines: list[str], lengths: list[int], repetition: float) -> list[str]:
    from lyrictool.lyrics import HINT_CLOSE, HINT_OPEN, has_hints

    issues = []
    if not lines:
        issues.append("empty")
    if has_hints(text) or HINT_OPEN in text or HINT_CLOSE in text:
        issues.append("leaked hints")
    if _LEAK.search(text):
        issues.append("leaked control text")
    if any(n > MAX_LINE_SYLLABLES for n in lengths):
        issues.append("run-on line")
    run = 1
    for prev, line in pairwise(lines):
        run = run + 1 if line == prev else 1
        if run > MAX_SAME_LINE_RUN:
            issues.append("line loop")
            break
    if any(_CHAR_LOOP.search(line) for line in lines):
        issues.append("character loop")
    if len(lines) >= 4 and repetition > 0.5:
        issues.append("mostly repeated lines")
    return issues


def song_metrics(lyrics: str, controls: dict | None = None, scheme: str = "shisanzhe") -> dict:
    """All objective metrics of one song against its controls (docs/metrics.md).

    Keys: rhyme_accuracy, rhyme_density (strict rhymes), rhyme_accuracy_near, rhyme_density_near
    (near rhymes count too), line_length_accuracy, line_length_accuracy_pm1, structure_accuracy,
    format_validity, format_issues, distinct_1, distinct_2, repetition_rate, repeated_lines, n_lines, n_sections,
    n_syllables.  None where no control asks for it.
    """
    from lyrictool.lyrics import parse, strip_hints
    from lyrictool.phonetics import groups_rhyme, line_groups, sung_syllables, syllable_count

    text = lyrics if isinstance(lyrics, str) else ""
    c = controls_dict(controls)
    doc = parse(strip_hints(text))  # score what was sung; leaked hints still fail format
    lines = doc.lines
    n = len(lines)
    groups = line_groups(lines, scheme)
    lengths = [syllable_count(line) for line in lines]

    def near(a: str | None, b: str | None) -> bool:
        return groups_rhyme(a, b, scheme, "near")

    target, pattern = rhyme_request(c, scheme)
    sizes = [len(sec.lines) for sec in doc.sections if sec.lines]
    rhyme_accuracy = rhyme_accuracy_near = None
    if target or pattern:
        rhyme_accuracy = _rhyme_accuracy(groups, target, pattern, sizes)
        rhyme_accuracy_near = _rhyme_accuracy(groups, target, pattern, sizes, near)

    wanted_lengths = c.get("line_lengths")
    length_acc = length_acc_pm1 = None
    if isinstance(wanted_lengths, list) and wanted_lengths:
        slots = max(len(wanted_lengths), n)
        pairs = [(a, b) for a, b in zip(lengths, wanted_lengths) if isinstance(b, int)]
        length_acc = sum(a == b for a, b in pairs) / slots
        length_acc_pm1 = sum(abs(a - b) <= 1 for a, b in pairs) / slots

    wanted_structure = c.get("structure")
    structure_acc = None
    if isinstance(wanted_structure, list) and wanted_structure:
        structure_acc = _structure_accuracy(doc.sections, wanted_structure)

    tokens_per_line = [sung_syllables(line) for line in lines]
    unigrams = [t for toks in tokens_per_line for t in toks]
    bigrams = [(a, b) for toks in tokens_per_line for a, b in pairwise(toks)]
    repetition = (n - len(set(lines))) / n if n else 0.0
    issues = _format_issues(text, lines, lengths, repetition)

    return {
        "rhyme_accuracy": rhyme_accuracy,
        "rhyme_density": _rhyme_density(groups),
        "rhyme_accuracy_near": rhyme_accuracy_near,
        "rhyme_density_near": _rhyme_density(groups, near),
        "line_length_accuracy": length_acc,
        "line_length_accuracy_pm1": length_acc_pm1,
        "structure_accuracy": structure_acc,
        "format_validity": 0.0 if issues else 1.0,
        "format_issues": issues,
        "distinct_1": len(set(unigrams)) / len(unigrams) if unigrams else 0.0,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "repetition_rate": repetition,
        "repeated_lines": _repeat_share(tuple(t) for t in tokens_per_line),
        "n_lines": n,
        "n_sections": sum(1 for s in doc.sections if s.lines),
        "n_syllables": sum(lengths),
    }


def repeated_lines(lines: list[str]) -> float:
    """Share of lines that repeat an earlier line of the same song, compared by their sung syllables (punctuation,
    spaces and section tags ignored: 春风，春雨 repeats 春风春雨); 0.0 for no lines.  A chorus sung twice counts
    its second copy; a model that loops one line scores near 1."""
    from lyrictool.phonetics import sung_syllables

    return _repeat_share(tuple(sung_syllables(line)) for line in lines)


def _repeat_share(keys) -> float:
    """Share of ``keys`` equal to an earlier one; 0.0 for none."""
    seen: set = set()
    repeats = total = 0
    for key in keys:
        repeats += key in seen
        seen.add(key)
        total += 1
    return repeats / total if total else 0.0


def repeated_rhyme_chars(lines: list[str], scheme: str = "shisanzhe") -> float | None:
    """Share of rhyming line ends (lines whose last sung syllable has a rhyme group) whose rhyme-bearing character
    already ended an earlier line of the song: 家 / 花 / 家 / 家 -> 2/4.  High values mean the rhyme is bought by
    repeating one character, not by finding new ones.  None when no line has a rhyme group."""
    from lyrictool.phonetics import analyze_line

    chars = [s.char for s in (analyze_line(line, scheme) for line in lines) if s is not None and s.group]
    if not chars:
        return None
    return sum(c in chars[:i] for i, c in enumerate(chars)) / len(chars)


def aggregate(per_song: list[dict]) -> dict:
    """Means over songs: each rate over the songs where it applies, with its count ``n_<name>``."""
    out: dict[str, Any] = {"n": len(per_song)}
    for key in RATE_METRICS + COUNT_METRICS:
        values = [s[key] for s in per_song if s.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
        if key in RATE_METRICS:
            out[f"n_{key}"] = len(values)
    issues = Counter(issue for s in per_song for issue in s.get("format_issues") or [])
    out["format_issues"] = dict(issues.most_common())
    return out


def rhyme_rows(text: str, scheme: str, strictness: str = "strict", skip_particles: bool = False
               ) -> list[dict[str, Any]]:
    """One dict per lyric line: section, line, char, pinyin, final, tone, group (None if no group), and
    pattern, the line's letter in its section's rhyme pattern (A, B, ...; X = rhymes with no other line)."""
    from lyrictool.lyrics import parse
    from lyrictool.phonetics import analyze_line, groups_pattern

    rows = []
    for section in parse(text).sections:
        sounds = [analyze_line(line, scheme, skip_particles=skip_particles) for line in section.lines]
        letters = groups_pattern([sound.group if sound else None for sound in sounds], scheme, strictness)
        for line, sound, letter in zip(section.lines, sounds, letters):
            rows.append(
                {
                    "section": section.name,
                    "line": line,
                    "char": sound.char if sound else None,
                    "pinyin": sound.pinyin if sound else None,
                    "final": sound.final if sound else None,
                    "tone": sound.tone if sound else None,
                    "group": sound.group if sound else None,
                    "pattern": letter,
                }
            )
    return rows
