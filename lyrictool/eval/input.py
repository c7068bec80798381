"""Generations files (``eval --input``, ``generations:`` systems): every row checked, every song scored.

A row is ``{"lyrics": str, "controls": {...}}`` (more fields allowed); a bad row is ``path:line: reason``,
raised or, with ``skip_invalid``, collected.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from lyrictool.errors import BOM, UserError, row_error


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
            if number == 1:
                raw = raw.removeprefix(BOM)  # as Notepad and spreadsheets save "UTF-8"
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
    from lyrictool.console import err_console as console

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


def score_input(input: str, scheme: str = "shisanzhe", skip_invalid: bool = False) -> dict:
    """The ``eval --input FILE`` result: aggregated metrics of one generations file and its invalid rows."""
    from lyrictool.metrics import aggregate

    start = time.perf_counter()
    per_song, errors = score_file(input, scheme, skip_invalid)
    if not per_song:  # as with several --input files: n = 0 is no result, and must not pass as one (exit 0)
        skipped = f" ({len(errors)} invalid rows skipped)" if errors else ""
        raise UserError(f"{input}: no valid rows to score{skipped}")
    return {
        "input": str(input),
        "scheme": scheme,
        "metrics": aggregate(per_song),
        "invalid_rows": len(errors),
        "invalid_examples": errors[:10],
        "wall_s": round(time.perf_counter() - start, 3),
    }
