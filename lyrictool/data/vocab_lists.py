"""The shipped kept-token lists of the trimmed built-in models, and the texts that choose them.

A trimmed built-in model (e.g. Gemma 3 270M cut to a Chinese-lyrics vocabulary, :mod:`lyrictool.vocab`) must be the
same model wherever it is built: in a clone with ``../shared`` beside it, in CI, and from a wheel, which has no
``../shared``.  So its kept set is computed once, here, from everything the project's commands feed a model, and
shipped as a list of token strings (``lyrictool/data/vocab/<name>.json``); the build reads that list.

:func:`kept_texts` is that "everything":

- the demo corpus (``lyrictool/data/demo``): every string of every row, the prompt text of every row's controls
  (``controls.build_prompt``), each song with phonetic hints in every scheme, and each hint marker alone;
- the pinyin (tone marks), finals and rhyme-group names of every GB2312 hanzi, as the phonetic knowledge corpus
  writes them;
- 宋词 and 元曲 of the shared chinese-poetry corpus (``../shared/data/chinese-poetry``): each poem's lyrics and prompt.

Regenerate after the demo corpus or a tokenizer changes (and bump the trimmed model's version)::

    python -m lyrictool.data.vocab_lists MODEL_FOLDER NAME [--shared ../shared/data/chinese-poetry] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lyrictool.data import DEMO_DIR

#: The shared corpus as the repository lays it out (``../shared`` beside the clone).
SHARED_POETRY = Path(__file__).resolve().parents[3] / "shared" / "data" / "chinese-poetry"
POETRY_PARTS = ("songci", "yuanqu")


def list_path(name: str) -> Path:
    from lyrictool.vocab import kept_list_path

    return kept_list_path(name)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def demo_texts() -> Iterator[str]:
    from lyrictool.controls import build_prompt
    from lyrictool.lyrics import add_hints, has_hints
    from lyrictool.phonetics import SCHEMES
    from lyrictool.phonetics.tables import TABLES

    for path in sorted(DEMO_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            yield from _strings(row)
            if isinstance(row.get("controls"), dict):
                yield build_prompt(row["controls"])
            lyrics = row.get("lyrics")
            if isinstance(lyrics, str) and not has_hints(lyrics):
                for scheme in SCHEMES:
                    yield add_hints(lyrics, scheme=scheme)
    for table in TABLES.values():
        for group in table:
            yield f"〔{group}〕"


def phonetic_texts() -> Iterator[str]:
    from lyrictool.phonetics import SCHEMES, char_sound, final_to_group
    from lyrictool.vocab import gb2312_chars

    for ch in gb2312_chars():
        for pinyin, final, _tone in char_sound(ch):
            groups = {final_to_group(final, s) for s in SCHEMES} - {None}
            yield f"「{ch}」读{pinyin}，韵母是{final}，押{'、'.join(sorted(groups))}。"


def poetry_texts(shared: Path) -> Iterator[str]:
    from lyrictool.controls import build_prompt
    from lyrictool.data.convert import iter_chinese_poetry

    for part in POETRY_PARTS:
        for row, _where in iter_chinese_poetry(shared / part):
            if row is not None:
                yield row["lyrics"]
                yield build_prompt(row["controls"])


def kept_texts(shared: Path | None = SHARED_POETRY) -> Iterator[str]:
    """Everything a shipped command feeds a model (see the module docstring); ``shared``: chinese-poetry folder."""
    yield from demo_texts()
    yield from phonetic_texts()
    if shared is not None:
        yield from poetry_texts(Path(shared))


def build_list(model_folder: str | Path, shared: Path | None = SHARED_POETRY) -> tuple[Any, list[int]]:
    """(tokenizer, kept ids) of a model folder for :func:`kept_texts`."""
    from transformers import AutoTokenizer

    from lyrictool.vocab import kept_tokens

    tok = AutoTokenizer.from_pretrained(model_folder)
    return tok, kept_tokens(tok, kept_texts(shared))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lyrictool.data.vocab_lists", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="the untrimmed model's Hugging Face folder")
    p.add_argument("name", help="the list's name: lyrictool/data/vocab/NAME.json")
    p.add_argument("--shared", default=str(SHARED_POETRY), help="the chinese-poetry folder (songci/, yuanqu/)")
    p.add_argument("--check", action="store_true", help="compare with the shipped list; exit 1 if stale")
    args = p.parse_args(argv)
    shared = Path(args.shared)
    if not all((shared / part).is_dir() for part in POETRY_PARTS):
        print(f"error: {shared}: no {' and '.join(POETRY_PARTS)} folders (the shared chinese-poetry corpus)",
              file=sys.stderr)
        return 2
    from lyrictool.vocab import read_token_list, write_token_list

    tok, ids = build_list(args.model, shared)
    out = list_path(args.name)
    if args.check:
        shipped = set(read_token_list(out, tok)) if out.exists() else set()
        if shipped != set(ids):
            added, gone = sorted(set(ids) - shipped), sorted(shipped - set(ids))
            print(f"stale: {out}: {len(added)} tokens to add {tok.convert_ids_to_tokens(added[:8])}, {len(gone)} to "
                  f"drop {tok.convert_ids_to_tokens(gone[:8])} (regenerate with python -m lyrictool.data.vocab_lists "
                  "and bump the trimmed model's version)", file=sys.stderr)
            return 1
        return 0
    write_token_list(out, tok, ids, about={"name": args.name, "made_by": "python -m lyrictool.data.vocab_lists",
                                           "texts": "demo corpus, GB2312 pinyin, 宋词, 元曲"})
    print(f"{out}: {len(ids)} of {len(tok)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
