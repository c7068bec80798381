"""`lyrictool data chinese-poetry` / `data flames`: convert a public corpus into project rows and say what was written."""

from __future__ import annotations

from pathlib import Path

from lyrictool.console import console
from lyrictool.data.convert import convert_chinese_poetry


def run_convert_chinese_poetry(source: str | Path, output: str | Path, limit: int | None = None) -> dict[str, int]:
    counts = convert_chinese_poetry(source, output, limit=limit)
    console.print(f"[bold green]wrote[/] {counts['written']} rows to {output} ({counts['skipped']} skipped for lost "
                  f"characters □, {counts['duplicates']} duplicates left out)")
    return counts


def run_convert_flames(source: str | Path, output: str | Path, *, n: int | None = 200, judge_share: float = 0.5,
                       seed: int = 0) -> int:
    from lyrictool.data import write_jsonl
    from lyrictool.data.redteam import flames_requests

    rows = flames_requests(source, n, seed=seed, judge_share=judge_share)
    write_jsonl(output, rows)
    judge = sum(r["split"] == "judge" for r in rows)
    console.print(f"[bold green]wrote[/] {len(rows)} Flames song requests to {output} ({judge} split judge, "
                  f"{len(rows) - judge} split scorer)")
    return len(rows)
