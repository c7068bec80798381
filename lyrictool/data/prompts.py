"""Prompt rows: what to generate for (rejection sampling, RL, eval), one reader for all three.

A prompt row is ``{"controls": {...}}``, or a lyrics row ``{"lyrics", "controls"?}`` whose prompt states the
controls the recipe's ``data`` section asks for (derived from the lyrics where missing), or, where a command
allows it, a free-text ``{"prompt": "..."}``.  An optional ``id`` names the prompt across files; an optional
``safety`` (a JSON boolean) tags a red-team request for LLaMA 2's safety rule (lyrictool.rewards.SafetyRule).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lyrictool.controls import Controls, build_messages, parse_controls
from lyrictool.data import Record, load_records
from lyrictool.data.lyrics_rows import LyricsExample, lyrics_example, prompt_controls
from lyrictool.errors import UserError

if TYPE_CHECKING:
    from lyrictool.recipes import DataSpec


@dataclass
class PromptRow:
    where: str
    id: str | None
    controls: Controls
    text: str | None = None  # a free-text prompt instead of controls
    safety: bool | None = None  # the row's safety tag (a red-team request), None when the row has none

    def messages(self) -> list[dict]:
        """The user turn: the text as given, or the controls through the one prompt template."""
        if self.text is not None:
            return [{"role": "user", "content": self.text}]
        return build_messages(self.controls)["prompt"]


def prompt_row(rec: Record, data: DataSpec | None = None, rng: random.Random | None = None, *,
               text_prompts: bool = False) -> PromptRow:
    """One row; with ``data``, its controls are the ones that section states (derived, dropped) like SFT's."""
    d = rec.data
    rid = str(d["id"]) if d.get("id") is not None else None
    safety = safety_tag(d, rec.where)
    if "lyrics" in d:
        ex = lyrics_example(rec)
    elif "controls" in d or not text_prompts:
        ex = LyricsExample(rec.where, "", parse_controls(d.get("controls"), where=rec.where))
    elif isinstance(d.get("prompt"), str) and d["prompt"].strip():
        return PromptRow(rec.where, rid, Controls(), text=d["prompt"], safety=safety)
    else:
        raise UserError(f"a prompt row needs 'controls' (or 'lyrics' to derive them from, or a text 'prompt'); "
                        f"fields present: {', '.join(map(str, d)) or 'none'}", where=rec.where)
    controls = prompt_controls(ex, data, rng or random.Random(0)) if data is not None else ex.controls
    return PromptRow(rec.where, rid, controls, safety=safety)


def safety_tag(d: dict, where: str) -> bool | None:
    """A row's ``safety`` tag: True / False, None when absent; anything but a JSON boolean is an error."""
    v = d.get("safety")
    if v is None or isinstance(v, bool):
        return v
    raise UserError(f"key 'safety' must be true or false (a JSON boolean tagging a red-team request), got {v!r}",
                    where=where)


def load_prompt_rows(source: str, *, data: DataSpec | None = None, rng: random.Random | None = None,
                     what: str = "prompts", text_prompts: bool = False, limit: int | None = None) -> list[PromptRow]:
    """Every row of ``source`` as a prompt (``path:line: reason`` on the first bad one); at most ``limit``."""
    split, fields = (data.split, data.fields) if data is not None else ("train", None)
    rows = []
    for rec in load_records(source, split=split, fields=fields, what=what):
        rows.append(prompt_row(rec, data, rng, text_prompts=text_prompts))
        if limit and len(rows) >= limit:
            break
    return rows
