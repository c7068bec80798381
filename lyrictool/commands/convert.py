"""`lyrictool data chinese-poetry`: convert the corpus into lyrics rows and say what was written and left out."""

from __future__ import annotations

from pathlib import Path

from lyrictool.console import console
from lyrictool.data.convert import convert_chinese_poetry


def run_convert_chinese_poetry(source: str | Path, output: str | Path, limit: int | None = None) -> dict[str, int]:
    counts = convert_chinese_poetry(source, output, limit=limit)
    console.print(f"[bold green]wrote[/] {counts['written']} rows to {output} ({counts['skipped']} skipped for lost "
                  f"characters □, {counts['duplicates']} duplicates left out)")
    return counts
