"""Preference pairs: ratings rows and preference rows of one prompt become (chosen, rejected, margin) pairs.

One home for pairing, so ``score`` (a reward model, with margins) and ``dpo`` (no margin) read a ratings file the
same way.  Either kind of row may be mixed in one file:

- ratings rows ``{"controls" | "prompt", "lyrics", "ratings": {"language": 1-5, ...}}``: a row's rating is the
  weighted mean of ``aspects``; two rows of one prompt pair up (higher = chosen) when their ratings differ by more
  than ``min_gap``, with margin ``margin_scale`` x the gap;
- preference rows ``{"controls" | "prompt", "chosen", "rejected"}`` (an optional numeric ``margin``, else 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lyrictool.data import load_records, split_records
from lyrictool.errors import UserError

if TYPE_CHECKING:
    from lyrictool.recipes import DataSpec




@dataclass
class Pair:
    where: str
    prompt: list[dict]   # the user turn(s)
    chosen: str
    rejected: str
    margin: float

    def as_row(self, with_margin: bool) -> dict[str, Any]:
        row = {"prompt": self.prompt, "chosen": [{"role": "assistant", "content": self.chosen}],
               "rejected": [{"role": "assistant", "content": self.rejected}]}
        if with_margin:
            row["margin"] = self.margin
        return row


def row_prompt(d: dict, where: str) -> list[dict]:
    """The user turn of a row: its controls through the one prompt template, or its own prompt."""
    from lyrictool.controls import parse_controls, prompt_messages

    if "controls" in d or d.get("prompt") is None:
        return prompt_messages(parse_controls(d.get("controls"), where=where))
    return prompt_messages(d["prompt"], where=where)


def row_text(d: dict, key: str, where: str, hint: str = "; map yours with data.fields") -> str:
    """The non-empty text under ``key`` of a row (chosen, rejected, lyrics)."""
    v = d.get(key)
    if v is None:
        raise UserError(f"missing field '{key}' (fields present: {', '.join(map(str, d)) or 'none'}{hint})",
                        where=where)
    if not isinstance(v, str) or not v.strip():
        raise UserError(f"'{key}' must be non-empty lyrics text, got {type(v).__name__ if v is not None else 'none'}",
                        where=where)
    return v


def row_rating(ratings: Any, aspects: dict[str, float], where: str) -> float:
    if not isinstance(ratings, dict):
        raise UserError(f"'ratings' must be a mapping like {{language: 4, genre: 5}}, got {type(ratings).__name__}",
                        where=where)
    total = 0.0
    for aspect, weight in aspects.items():
        if aspect not in ratings:
            raise UserError(f"ratings has no '{aspect}' (has {', '.join(map(str, ratings)) or 'none'}); rate it, "
                            "or set the recipe's aspects to the rated ones", where=where)
        v = ratings[aspect]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise UserError(f"ratings.{aspect} must be a number, got {v!r}", where=where)
        total += weight * v
    return total / sum(aspects.values())


def build_pairs(records: list, *, aspects: dict[str, float], margin_scale: float = 0.0, min_gap: float = 0.0,
                max_pairs_per_prompt: int | None = None) -> tuple[list[list[Pair]], int]:
    """Pairs grouped by prompt (so splits never share a prompt), and how many rows were ratings rows.

    Ratings rows of one prompt pair up when their weighted ratings (``aspects``) differ by more than ``min_gap``;
    the pair's margin is ``margin_scale`` times the gap (0 for a loss without a margin, e.g. DPO).
    """
    groups: dict[str, list[Pair]] = {}
    rated: dict[str, list[tuple[float, str, str, list[dict]]]] = {}
    n_ratings = 0
    for rec in records:
        d, where = rec.data, rec.where
        prompt = row_prompt(d, where)
        key = json.dumps(prompt, ensure_ascii=False, sort_keys=True)
        if "chosen" in d or "rejected" in d:
            m = d.get("margin", 0.0)
            m = m if isinstance(m, (int, float)) and not isinstance(m, bool) else 0.0
            groups.setdefault(key, []).append(Pair(where, prompt, row_text(d, "chosen", where),
                                                   row_text(d, "rejected", where), float(m)))
        elif "lyrics" in d:
            if d.get("ratings") is None:
                raise UserError("ratings row without 'ratings' (e.g. {language: 4, genre: 5, content: 3}); add "
                                "them, or give preference rows {chosen, rejected}", where=where)
            n_ratings += 1
            rated.setdefault(key, []).append((row_rating(d["ratings"], aspects, where),
                                              row_text(d, "lyrics", where), where, prompt))
        else:
            raise UserError(f"neither a ratings row (lyrics + ratings) nor a preference row (chosen + rejected); "
                            f"fields present: {', '.join(map(str, d)) or 'none'} (map yours with data.fields)",
                            where=where)
    for key, rows in rated.items():
        pairs = []
        for i, (ri, ti, wi, prompt) in enumerate(rows):
            for rj, tj, _, _ in rows[i + 1:]:
                if abs(ri - rj) > min_gap and ti != tj:
                    hi, lo = ((ti, tj) if ri > rj else (tj, ti))
                    pairs.append(Pair(wi, prompt, hi, lo, margin_scale * abs(ri - rj)))
        pairs.sort(key=lambda p: -p.margin)
        groups.setdefault(key, []).extend(pairs[: max_pairs_per_prompt])
    return [g for g in groups.values() if g], n_ratings


def load_pairs(data: DataSpec, *, seed: int, where: str, aspects: dict[str, float], margin_scale: float = 0.0,
               min_gap: float = 0.0, max_pairs_per_prompt: int | None = None
               ) -> tuple[list[Pair], list[Pair], dict[str, int]]:
    """Train and held-out pairs of ``data`` (held out by prompt) and their counts; ``where``: the recipe file."""
    pairing = {"aspects": aspects, "margin_scale": margin_scale, "min_gap": min_gap,
               "max_pairs_per_prompt": max_pairs_per_prompt}
    records = load_records(data.train, split=data.split, fields=data.fields, what="data.train")
    groups, n_ratings = build_pairs(records, **pairing)
    if not groups:
        raise UserError(f"data.train: no pairs in {data.train}: no two ratings of the same prompt differ by more "
                        f"than min_gap ({min_gap}); rate several lyrics per prompt", where=where)
    if data.max_rows:
        import random

        groups = random.Random(seed).sample(groups, min(data.max_rows, len(groups)))
    if data.eval:
        eval_groups, _ = build_pairs(load_records(data.eval, split=data.split, fields=data.fields, what="data.eval"),
                                     **pairing)
        train_groups = groups
    else:
        train_groups, eval_groups = split_records(groups, data.eval_fraction, seed,
                                                  what=f"prompt(s) with pairs in {data.train}", where=where)
    train = [p for g in train_groups for p in g]
    held = [p for g in eval_groups for p in g]
    stats = {"rows": len(records), "ratings_rows": n_ratings, "prompts_train": len(train_groups),
             "prompts_eval": len(eval_groups), "pairs_train": len(train), "pairs_eval": len(held)}
    return train, held, stats
