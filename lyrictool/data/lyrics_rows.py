"""Lyrics dataset rows -> training rows.

A lyrics row is ``{"lyrics": str, "controls": {...}}`` (more fields allowed).  The recipe's ``data`` section
says which controls the prompt states (``controls``), which are derived from the lyrics when a row lacks them
(``derive``), how often each stated control is dropped (``control_dropout``: one corpus then trains a model
that follows any subset), and whether phonetic hints are written into the target (``hints``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lyrictool.controls import Controls, build_messages, derive_controls, parse_controls
from lyrictool.data import Record, load_records, split_records
from lyrictool.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from lyrictool.recipes import DataSpec


@dataclass
class LyricsExample:
    where: str
    lyrics: str
    controls: Controls
    extra: dict[str, Any] = field(default_factory=dict)


def lyrics_example(rec: Record) -> LyricsExample:
    """Validate one lyrics row; problems are ``path:line: reason``."""
    d = rec.data
    lyrics = d.get("lyrics")
    if lyrics is None:
        raise UserError(f"missing field 'lyrics' (fields present: {', '.join(map(str, d)) or 'none'}; map "
                        "yours with data.fields)", where=rec.where)
    if not isinstance(lyrics, str):
        raise UserError(f"'lyrics' must be a string, got {type(lyrics).__name__}", where=rec.where)
    if not lyrics.strip():
        raise UserError("'lyrics' is empty", where=rec.where)
    controls = parse_controls(d.get("controls"), where=rec.where)
    extra = {k: v for k, v in d.items() if k not in ("lyrics", "controls")}
    return LyricsExample(rec.where, lyrics, controls, extra)


def check_against_lyrics(ex: LyricsExample, scheme: str = "shisanzhe") -> str | None:
    """A stated control the lyrics themselves contradict (it would teach the model to ignore controls)."""
    if ex.controls.structure is None and ex.controls.line_lengths is None:
        return None
    derived = derive_controls(ex.lyrics, ("structure", "line_lengths"), scheme)
    n = len(derived.get("line_lengths", [])) or sum(s["lines"] for s in derived.get("structure", []))
    want = ex.controls.n_lines
    if want is not None and n and want != n:
        return f"controls ask for {want} lines but the lyrics have {n}"
    return None


@dataclass
class RowStats:
    rows: int = 0
    stated: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "controls_stated": dict(self.stated), "controls_missing": dict(self.missing)}


def prompt_controls(ex: LyricsExample, spec: DataSpec, rng: random.Random, stats: RowStats | None = None
                    ) -> Controls:
    """The controls this row's prompt states: given ones, plus derived ones, minus dropped ones."""
    given = ex.controls.to_dict()
    need = [c for c in spec.derive if c not in given and c in spec.controls]
    if need:
        given.update(derive_controls(ex.lyrics, need, spec.scheme))
    stated = {}
    for name in spec.controls:
        if name not in given:
            if stats is not None:
                stats.missing[name] += 1
            continue
        if spec.control_dropout and rng.random() < spec.control_dropout:
            continue
        stated[name] = given[name]
        if stats is not None:
            stats.stated[name] += 1
    return Controls.model_validate(stated)


def target_text(lyrics: str, hints: str, scheme: str = "shisanzhe") -> str:
    """The completion the model learns: the lyrics, with phonetic hints when the recipe asks for them."""
    if hints == "none":
        return lyrics.strip()
    from lyrictool.lyrics import add_hints

    return add_hints(lyrics.strip(), mode=hints, scheme=scheme)


def sft_rows(examples: list[LyricsExample], spec: DataSpec, seed: int = 0,
             stats: RowStats | None = None) -> list[dict]:
    """Conversational prompt/completion rows for TRL's SFTTrainer (loss on the completion only)."""
    rng = random.Random(seed)
    rows = []
    for ex in examples:
        controls = prompt_controls(ex, spec, rng, stats)
        rows.append(build_messages(controls, target_text(ex.lyrics, spec.hints, spec.scheme)))
        if stats is not None:
            stats.rows += 1
    return rows


def load_lyrics_examples(data: DataSpec, seed: int, *, check_controls: bool = True):
    """Train and eval lyrics examples; every row validated (``path:line: reason`` on the first bad one)."""

    def read(source: str, what: str) -> list:
        exs = [lyrics_example(r) for r in load_records(source, split=data.split, fields=data.fields, what=what)]
        if check_controls:
            for ex in exs:
                problem = check_against_lyrics(ex, data.scheme)
                if problem:
                    raise UserError(problem, where=ex.where)
        if data.hints != "none":
            from lyrictool.lyrics import has_hints

            for ex in exs:
                if has_hints(ex.lyrics):
                    raise UserError("lyrics already contain hint markers 〔…〕; remove them or set data.hints: none",
                                    where=ex.where)
        return exs

    train = read(data.train, "data.train")
    if data.max_rows:
        rng = random.Random(seed)
        train = rng.sample(train, min(data.max_rows, len(train)))
    if data.eval:
        return train, read(data.eval, "data.eval")
    return split_records(train, data.eval_fraction, seed)


def sft_datasets(data: DataSpec, seed: int):
    """Validated train/eval prompt-completion rows, and the eval controls for end-of-training generation."""
    train_ex, eval_ex = load_lyrics_examples(data, seed)
    stats = RowStats()
    train_rows = sft_rows(train_ex, data, seed=seed, stats=stats)
    eval_rows = sft_rows(eval_ex, data.model_copy(update={"control_dropout": 0.0}), seed=seed)
    rng = random.Random(seed)
    eval_spec = data.model_copy(update={"control_dropout": 0.0})
    eval_controls = [prompt_controls(ex, eval_spec, rng) for ex in eval_ex]
    return train_rows, eval_rows, eval_controls, stats
