"""Bodies of ``lyrictool rhyme`` and ``lyrictool eval --input`` (cli.py calls these)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from lyrictool.errors import UserError, row_error

FORMATS = ("table", "json")
# One colour per rhyme group, in order of first appearance (rich colour names).
_PALETTE = (
    "cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "bright_green",
    "bright_magenta", "bright_cyan", "orange3", "purple", "spring_green3", "gold3", "deep_pink3",
    "steel_blue1", "chartreuse3",
)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _read_text(text: str | None, file: str | None) -> str:
    if text is not None and file is not None:
        raise UserError("give the lyrics either as TEXT or with --file, not both")
    if file is not None:
        if file == "-":
            return sys.stdin.read()
        path = Path(file)
        if not path.is_file():
            raise UserError(f"{file}: no such file; pass a UTF-8 text file with one lyric line per line")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    if text is None:
        raise UserError("no lyrics: pass TEXT (lines separated by newlines or '/') or --file FILE")
    return text.replace("／", "\n").replace("/", "\n")


def rhyme_rows(text: str, scheme: str, strictness: str = "strict", skip_particles: bool = False
               ) -> list[dict[str, Any]]:
    """One dict per lyric line: section, line, char, pinyin, final, tone, group (None if no group), and
    pattern, the line's letter in its section's rhyme pattern (A, B, ...; X = rhymes with no other line)."""
    from lyrictool.lyrics import parse
    from lyrictool.phonetics import analyze_line, rhyme_pattern

    rows = []
    for section in parse(text).sections:
        letters = rhyme_pattern(section.lines, scheme, strictness, skip_particles=skip_particles)
        for line, letter in zip(section.lines, letters):
            sound = analyze_line(line, scheme, skip_particles=skip_particles)
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


def run_rhyme(text: str | None, file: str | None, scheme: str, fmt: str, strictness: str = "strict",
              skip_particles: bool = False) -> None:
    """Print each line's last sung syllable, final, tone, rhyme group and pattern letter (table or JSON)."""
    from lyrictool.phonetics import check_scheme, check_strictness

    _check_format(fmt)
    check_scheme(scheme)
    check_strictness(strictness)
    from lyrictool.lyrics import parse

    lyrics = _read_text(text, file)
    rows = rhyme_rows(lyrics, scheme, strictness, skip_particles)
    sections, start = [], 0
    for section in parse(lyrics).sections:
        if section.lines:
            letters = "".join(r["pattern"] for r in rows[start : start + len(section.lines)])
            sections.append({"section": section.name, "lines": len(section.lines), "pattern": letters})
            start += len(section.lines)
    if fmt == "json":
        print(json.dumps({"scheme": scheme, "strictness": strictness, "skip_particles": skip_particles,
                          "sections": sections, "lines": rows}, ensure_ascii=False, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    colours: dict[str, str] = {}
    title = f"rhyme ({scheme}{', near rhymes' if strictness == 'near' else ''}"
    title += f"{', 虚字脚' if skip_particles else ''})"
    table = Table(title=title, title_justify="left")
    for column in ("#", "section", "line", "last", "pinyin", "final", "tone", "group", "pattern"):
        table.add_column(column, justify="right" if column in ("#", "tone") else "left")
    firsts = {sum(s["lines"] for s in sections[:k]) + 1 for k in range(len(sections))}
    for i, row in enumerate(rows, 1):
        new_section = i in firsts
        if new_section and i > 1:
            table.add_section()
        group = row["group"]
        style = colours.setdefault(group, _PALETTE[len(colours) % len(_PALETTE)]) if group else "dim"
        table.add_row(
            str(i),
            (row["section"] or "") if new_section else "",
            escape(row["line"]),
            row["char"] or "-",
            row["pinyin"] or "-",
            row["final"] if row["final"] else "-",
            str(row["tone"]) if row["tone"] else "-",
            f"[{style}]{group or '-'}[/]",
            row["pattern"],
            style=None,
        )
    if not rows:
        _console().print("no lyric lines")
        return
    _console().print(table)


# --- eval --input --------------------------------------------------------------------------


def _check_controls(controls: Any, scheme: str) -> str | None:
    """Why ``controls`` cannot be scored, or None.  Only what the metrics rely on is checked."""
    from lyrictool.phonetics import normalize_rhyme

    if controls is None:
        return None
    if hasattr(controls, "model_dump"):
        controls = controls.model_dump(exclude_none=True)
    if not isinstance(controls, dict):
        return f'"controls" must be an object, got {type(controls).__name__}'
    rhyme = controls.get("rhyme")
    if rhyme is not None and (not isinstance(rhyme, str) or normalize_rhyme(rhyme, scheme) is None):
        return f"controls.rhyme: unknown rhyme {rhyme!r} for scheme {scheme}; use a group name or a final"
    pattern = controls.get("scheme")
    if pattern is not None and not (isinstance(pattern, str) and re.sub(r"[\s|/]", "", pattern).isalpha()):
        return f'controls.scheme: {pattern!r} is not one letter per line (e.g. "AABB", X = free, "AABB|ABAB")'
    lengths = controls.get("line_lengths")
    if lengths is not None and not (
        isinstance(lengths, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in lengths)
    ):
        return "controls.line_lengths: must be a list of integers (characters per line)"
    structure = controls.get("structure")
    if structure is not None and not (
        isinstance(structure, list)
        and all(isinstance(s, dict) and isinstance(s.get("section"), str) for s in structure)
    ):
        return 'controls.structure: must be a list of {"section": "verse", "lines": 4} objects'
    return None


def generation_rows(path: Path, scheme: str, errors: list[str], skip_invalid: bool, advance=None):
    """Yield (line number, row) of each valid generations row; raise on, or collect, the invalid ones."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if advance is not None:
                advance(len(raw))
            reason = None
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line, reason = "", f"not UTF-8 ({e.reason} at byte {e.start})"
            if reason is None and not line.strip():
                continue
            row = None
            if reason is None:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    reason = f"not valid JSON ({e.msg} at column {e.colno})"
            if reason is None and not isinstance(row, dict):
                reason = f'a row must be a JSON object with a "lyrics" string, got {type(row).__name__}'
            if reason is None and not isinstance(row.get("lyrics"), str):
                reason = 'missing "lyrics" (a string)' if "lyrics" not in row else '"lyrics" must be a string'
            if reason is None:
                reason = _check_controls(row.get("controls"), scheme)
            if reason is not None:
                error = row_error(str(path), number, reason)
                if not skip_invalid:
                    raise error
                errors.append(str(error))
                continue
            yield number, row


def _rows(path: Path, scheme: str, errors: list[str], skip_invalid: bool, advance=None):
    """Yield (lyrics, controls) of each valid row; raise on, or collect, the invalid ones."""
    for _, row in generation_rows(path, scheme, errors, skip_invalid, advance):
        yield row["lyrics"], row.get("controls")


def score_file(path: str, scheme: str = "shisanzhe", skip_invalid: bool = False, progress: bool | None = None):
    """Score every row of a generations JSONL; returns (per-song metrics, invalid-row messages)."""
    from lyrictool.metrics import song_metrics
    from lyrictool.phonetics import check_scheme

    check_scheme(scheme)
    file = Path(path)
    if not file.is_file():
        raise UserError(f'{path}: no such file; pass a JSONL file of {{"lyrics": ..., "controls": {{...}}}} rows')
    size = file.stat().st_size
    errors: list[str] = []
    per_song: list[dict] = []
    console = _console(stderr=True)
    show = progress if progress is not None else (console.is_terminal or size > 4 << 20)
    if not show:
        for lyrics, controls in _rows(file, scheme, errors, skip_invalid):
            per_song.append(song_metrics(lyrics, controls, scheme))
        return per_song, errors
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("scoring {task.description}"), BarColumn(), DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"), TimeRemainingColumn(), console=console,
    ) as bar:
        task = bar.add_task(file.name, total=size, rows=0)
        for lyrics, controls in _rows(file, scheme, errors, skip_invalid, lambda n: bar.advance(task, n)):
            per_song.append(song_metrics(lyrics, controls, scheme))
            if len(per_song) % 256 == 0:
                bar.update(task, rows=len(per_song))
        bar.update(task, rows=len(per_song))
    return per_song, errors


def metrics_table(metrics: dict, title: str):
    """A rich table of aggregated metrics (value and how many songs it applies to)."""
    from rich.table import Table

    from lyrictool.metrics import COUNT_METRICS, RATE_METRICS

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("songs", justify="right")
    table.add_row("songs", str(metrics["n"]), "")
    for key in RATE_METRICS:
        value = metrics.get(key)
        table.add_row(key, "-" if value is None else f"{value:.3f}", str(metrics.get(f"n_{key}", "")))
    for key in COUNT_METRICS:
        value = metrics.get(key)
        table.add_row(f"mean {key}", "-" if value is None else f"{value:.1f}", "")
    return table


def run_eval_input(input: str, fmt: str, output: str | None, skip_invalid: bool, scheme: str) -> dict:
    """Score an existing generations JSONL; print a table or JSON; optionally write JSON to ``output``."""
    from lyrictool.metrics import aggregate

    _check_format(fmt)
    start = time.perf_counter()
    per_song, errors = score_file(input, scheme, skip_invalid)
    result = {
        "input": str(input),
        "scheme": scheme,
        "metrics": aggregate(per_song),
        "invalid_rows": len(errors),
        "invalid_examples": errors[:10],
        "wall_s": round(time.perf_counter() - start, 3),
    }
    if output:
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise UserError(f"--output {output}: cannot write ({e.strerror})") from None
    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        console = _console()
        console.print(metrics_table(result["metrics"], f"{input} ({scheme})"))
        issues = result["metrics"]["format_issues"]
        if issues:
            console.print("format issues: " + ", ".join(f"{k} {v}" for k, v in issues.items()))
        if errors:
            console.print(f"[yellow]skipped {len(errors)} invalid rows[/], first: {errors[0]}")
        console.print(f"scored {result['metrics']['n']:,} songs in {result['wall_s']:.1f} s")
    return result
