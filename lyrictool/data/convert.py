"""Converters from public corpora to lyrics rows ``{"id", "lyrics", "controls", "author"}``.

chinese-poetry (https://github.com/chinese-poetry/chinese-poetry, MIT): JSON lists of poems.

* 宋词 ``ci.song.*.json`` / ``songci300.json``: ``{author, paragraphs, rhythmic}``.  The tune name (词牌,
  ``rhythmic``) becomes the ``title`` control, ``genre`` is 宋词; each paragraph is one lyric line (a
  paragraph ends in 。 and carries the rhyme).  The source does not mark the two stanzas (阕), so a 词 is one
  section.
* 元曲 ``yuanqu.json``: ``{author, paragraphs, title}``; the title becomes the ``title`` control, genre 元曲.
* 诗经 ``shijing.json``: ``{title, content}``; each stanza (章) of ``content`` is a section, split into lines
  at 。！？；, genre 诗经.

Poems with a lost character (□) are skipped and counted (a gap would teach the model to write □); editorial
notes in full-width parentheses are removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lyrictool.errors import UserError

LOST_CHAR = "□"
NOTE = re.compile(r"（[^（）]*）|\([^()]*\)")
LINE_END = re.compile(r"(?<=[。！？；!?;])")


def _clean(line: str) -> str:
    return NOTE.sub("", str(line)).strip()


def poem_row(item: dict[str, Any], where: str) -> dict[str, Any] | None:
    """One lyrics row from one chinese-poetry object, or None when it cannot be used (lost characters)."""
    if not isinstance(item, dict):
        raise UserError(f"expected a JSON object, got {type(item).__name__}", where=where)
    if "content" in item and "paragraphs" not in item:  # 诗经
        stanzas = item["content"] if isinstance(item["content"], list) else [item["content"]]
        sections = []
        for stanza in stanzas:
            lines = [_clean(x) for x in LINE_END.split(str(stanza)) if _clean(x)]
            if lines:
                sections.append("[Verse]\n" + "\n".join(lines))
        lyrics, title, genre = "\n\n".join(sections), item.get("title"), "诗经"
    elif "paragraphs" in item:
        paragraphs = item["paragraphs"]
        if not isinstance(paragraphs, list):
            raise UserError(f"'paragraphs' must be a list of lines, got {type(paragraphs).__name__}", where=where)
        lyrics = "\n".join(line for line in (_clean(p) for p in paragraphs) if line)
        if "rhythmic" in item:
            title, genre = item.get("rhythmic"), "宋词"
        else:
            title, genre = item.get("title"), "元曲"
    else:
        raise UserError("not a chinese-poetry poem: expected 'paragraphs' (宋词, 元曲) or 'content' (诗经); "
                        f"keys: {', '.join(map(str, item))}", where=where)
    if not lyrics.strip() or LOST_CHAR in lyrics:
        return None
    controls: dict[str, Any] = {"genre": genre}
    if isinstance(title, str) and title.strip():
        controls["title"] = title.strip()[:80]
    row: dict[str, Any] = {"id": where, "lyrics": lyrics, "controls": controls}
    if item.get("author"):
        row["author"] = item["author"]
    return row


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.json") if p.name != "author.song.json"
                       and not p.name.startswith("author"))
        if not files:
            raise UserError(f"{source}: no .json files in this folder (expected e.g. ci.song.0.json, yuanqu.json)")
        return files
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    return [source]


def iter_chinese_poetry(source: str | Path) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """(row or None if skipped, where) for every poem in a file or folder."""
    for path in _files(Path(source).expanduser()):
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"not valid JSON ({e.msg})", where=f"{path}:{e.lineno}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        if not isinstance(items, list):
            raise UserError(f"{path}: expected a JSON list of poems")
        for i, item in enumerate(items):
            where = f"{path.name}[{i}]"
            yield poem_row(item, where), where


def convert_chinese_poetry(source: str | Path, output: str | Path, limit: int | None = None) -> dict[str, int]:
    """Write lyrics rows for every usable poem (at most ``limit``); returns {written, skipped, duplicates}.

    A poem whose text was already written (songci300.json repeats poems of ci.song.*.json) is left out.
    """
    from lyrictool.data import write_jsonl

    if limit is not None and limit < 1:
        raise UserError(f"--limit: must be at least 1 (got {limit})")
    rows, skipped, duplicates, seen = [], 0, 0, set()
    for row, _where in iter_chinese_poetry(source):
        if row is None:
            skipped += 1
            continue
        if row["lyrics"] in seen:
            duplicates += 1
            continue
        seen.add(row["lyrics"])
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise UserError(f"{source}: no usable poems found ({skipped} skipped for lost characters)")
    write_jsonl(output, rows)
    return {"written": len(rows), "skipped": skipped, "duplicates": duplicates}
