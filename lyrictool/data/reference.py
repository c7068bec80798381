"""The reference corpus that copying is measured against (:mod:`lyrictool.copying`).

A source is a chinese-poetry file or folder (``.json`` lists of poems: the shared 宋词 and 元曲, read in place) or
any lyrics-rows source (``.jsonl``/``.csv``/``.parquet``, ``builtin:demo-songs``): the training corpus.  Only its
lyrics are read.  Copyrighted lyrics never belong here: the reference is text the project may ship or read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lyrictool.errors import UserError


def _is_poetry(path: Path) -> bool:
    if path.is_dir():
        return True
    return path.suffix.lower() == ".json" and path.name.startswith(("ci.song", "songci", "yuanqu", "shijing"))


def reference_texts(sources: Sequence[str], *, key: str = "reference") -> list[str]:
    """Every text of every source, in order (``key`` names the recipe key in errors)."""
    from lyrictool.data import iter_records, resolve_source

    if not sources:
        raise UserError(f"{key}: empty list; name the training corpus and/or a chinese-poetry folder")
    texts: list[str] = []
    for i, source in enumerate(sources):
        where = f"{key}[{i}]"
        path = Path(resolve_source(source)).expanduser()
        before = len(texts)
        if path.exists() and _is_poetry(path):
            from lyrictool.data.convert import iter_chinese_poetry

            try:
                texts += [row["lyrics"] for row, _ in iter_chinese_poetry(path) if row is not None]
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
        else:
            if not path.exists() and not source.startswith("builtin:"):
                raise UserError(f"{where}: {source}: no such file or folder")
            for rec in iter_records(source):
                lyrics = rec.data.get("lyrics")
                if not isinstance(lyrics, str):
                    raise UserError(f"a reference row needs a 'lyrics' string ({where}: {source})", where=rec.where)
                texts.append(lyrics)
        if len(texts) == before:
            raise UserError(f"{where}: {source} has no texts")
    return texts


def reference_index(sources: Sequence[str], *, key: str = "reference", min_line_chars: int = 5, ngram: int = 4):
    """A :class:`lyrictool.copying.ReferenceIndex` over ``sources``."""
    from lyrictool.copying import ReferenceIndex

    return ReferenceIndex(reference_texts(sources, key=key), min_line_chars=min_line_chars, ngram=ngram)
