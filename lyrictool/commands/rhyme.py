"""`lyrictool rhyme`: each line's last sung syllable, final, tone and rhyme group, as a coloured table or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lyrictool.console import check_format, console
from lyrictool.errors import UserError
from lyrictool.metrics import rhyme_rows
from lyrictool.phonetics import check_scheme, check_strictness

# One colour per rhyme group, in order of first appearance (rich colour names).
_PALETTE = (
    "cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "bright_green",
    "bright_magenta", "bright_cyan", "orange3", "purple", "spring_green3", "gold3", "deep_pink3",
    "steel_blue1", "chartreuse3",
)


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


def run_rhyme(text: str | None, file: str | None, scheme: str, fmt: str, strictness: str = "strict",
              skip_particles: bool = False) -> None:
    """Print each line's last sung syllable, final, tone, rhyme group and pattern letter (table or JSON)."""
    from lyrictool.lyrics import parse

    check_format(fmt)
    check_scheme(scheme)
    check_strictness(strictness)
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
    named = any(row["section"] for row in rows)  # a section column only when the lyrics have section tags
    for column in ("#", "section", "line", "last", "pinyin", "final", "tone", "group", "pattern"):
        if column != "section" or named:
            table.add_column(column, justify="right" if column in ("#", "tone") else "left")
    firsts = {sum(s["lines"] for s in sections[:k]) + 1 for k in range(len(sections))}
    for i, row in enumerate(rows, 1):
        new_section = i in firsts
        if new_section and i > 1:
            table.add_section()
        group = row["group"]
        style = colours.setdefault(group, _PALETTE[len(colours) % len(_PALETTE)]) if group else "dim"
        cells = [(row["section"] or "") if new_section else ""] if named else []
        table.add_row(
            str(i),
            *cells,
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
        console.print("no lyric lines")
        return
    console.print(table)
