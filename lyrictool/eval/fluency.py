"""Fluency under a frozen reference model: the perplexity of generated lyrics, per song, per system, per pair.

What is scored is what is sung: a song's lyric lines (section tags and phonetic hints gone, :func:`sung_lines`),
one per line, tokenised by the reference model's tokenizer without its special tokens, after exactly one start
token (``<bos>``; the end token where the tokenizer has none) and followed by the end token, so a song that stops
is scored for stopping and an empty song is scored too.  Per song, ``log_ppl`` = the mean negative log-likelihood
per token (nats) of those tokens and the end token; its perplexity is ``exp(log_ppl)``.

Per system: the geometric mean of the songs' perplexities, ``exp(mean log_ppl)``, with the Student t 95% interval
of the mean log_ppl carried through ``exp``.  Between two systems on the same prompts: the ratio of their
geometric means, ``exp(mean of the per-prompt log_ppl differences)``, with the paired bootstrap 95% interval of
that mean (:func:`lyrictool.stats.paired_bootstrap`, the same resampling as every other eval difference) carried
through ``exp``: ``×1.10`` is 10% more perplexing to the reference model.

The reference is usually the base model the systems were trained from: a fine-tune that keeps its perplexity kept
the language the base model knew.  Lower is more fluent *to that model*; a model that loops one line is very
predictable, so perplexity is read beside ``repeated_lines`` (:func:`lyrictool.metrics.repeated_lines`), never
alone.  ``lyrictool eval`` adds it with the recipe's ``fluency`` section (:class:`FluencySpec`);
bench/real_rhyme.py scores its arms with :func:`lyrics_nll` too.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from pydantic import Field, field_validator

from lyrictool.errors import UserError
from lyrictool.recipes import ModelSpec, Strict

log = logging.getLogger("lyrictool")

KEY = "fluency.model"


class FluencySpec(Strict):
    """Perplexity of every system's lyric lines under one frozen reference model (docs/metrics.md#perplexity)."""

    model: ModelSpec | None = Field(
        None, description="The frozen reference model (any model.name; a plain string is the name), usually the base "
                          "model the systems were trained from; null = the baseline system's model.")
    batch_size: int = Field(8, ge=1, description="Songs per forward pass of the reference model.")

    @field_validator("model", mode="before")
    @classmethod
    def _name_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("model")
    @classmethod
    def _frozen(cls, v: ModelSpec | None) -> ModelSpec | None:
        if v is not None and v.lora is not None:
            raise ValueError("the reference model is only read, never trained: drop its lora section")
        return v


def sung_lines(text: str) -> str:
    """What perplexity is measured on: the lyric lines (section tags and hints gone), one per line."""
    from lyrictool.lyrics import parse, strip_hints

    return "\n".join(parse(strip_hints(text)).lines)


def token_sequences(tokenizer, texts: list[str], max_length: int | None = None) -> list[list[int]]:
    """Per text, the scored sequence: one start token (``<bos>``, or the end token where the tokenizer has no
    bos), the text's tokens without special tokens, the end token; cut to ``max_length`` tokens (the reference
    model's context) keeping the start."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    seqs = []
    for text in texts:
        ids = [start] + tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(ids[:max_length] if max_length else ids)
    return seqs


def lyrics_nll(model, tokenizer, texts: list[str], batch_size: int = 16) -> list[float]:
    """Per text, the mean negative log-likelihood per token (nats) under ``model``: the text's tokens and one end
    token, after ``<bos>`` (or the end token where the tokenizer has no bos), so an empty text is scored too.
    Batched by similar lengths (right padding, masked); the result is in ``texts`` order."""
    import torch

    limit = getattr(model.config, "max_position_embeddings", None)
    seqs = token_sequences(tokenizer, texts, limit)
    if limit and any(len(s) == limit for s in seqs):
        log.warning("fluency: songs longer than the reference model's %d positions are scored on their start", limit)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list[float] = [0.0] * len(seqs)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        chunk = [seqs[j] for j in idx]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        m = mask[:, 1:].float()
        for j, v in zip(idx, (-(logp * m).sum(1) / m.sum(1)).tolist()):
            out[j] = v
    return out


# ---- eval: the reference model, per song, per system, per pair -------------------------------------------------


def keyed(error: UserError, where: str | None) -> UserError:
    """A model-loading error re-worded for the recipe key the model came from."""
    message = str(error.args[0]) if error.args else str(error)
    return UserError(f"{KEY}: {message.removeprefix('model.name: ')}", where=where)


def check_reference(spec: ModelSpec, where: str | None, *, dry_run: bool) -> str:
    """Before any sampling: the reference model exists (its tokenizer loads; a dry run only resolves its name)."""
    from lyrictool.modeling import load_tokenizer, resolve_model_path

    try:
        if dry_run:
            resolve_model_path(spec.name, convert=False)
        else:
            load_tokenizer(spec.name, spec.trust_remote_code)
    except UserError as e:
        raise keyed(e, where) from None
    return f"perplexity under {spec.name}"


def score_fluency(groups: list[list[dict]], spec: ModelSpec, batch_size: int, where: str | None = None) -> dict:
    """Load the reference model once and score every song of every group (each song a dict with ``lyrics``):
    writes ``song["fluency"] = {log_ppl, perplexity, tokens}``; returns what was run (model, songs, tokens, s)."""
    from lyrictool.modeling import load_model

    t0 = time.perf_counter()
    try:
        ref = load_model(spec, for_training=False, announce=False)
    except UserError as e:
        raise keyed(e, where) from None
    loaded = time.perf_counter() - t0
    songs = [s for group in groups for s in group]
    texts = [sung_lines(s["lyrics"] or "") for s in songs]
    limit = getattr(ref.model.config, "max_position_embeddings", None)
    lengths = [len(seq) - 1 for seq in token_sequences(ref.tokenizer, texts, limit)]  # scored tokens: all but start
    nll = lyrics_nll(ref.model, ref.tokenizer, texts, batch_size=batch_size)
    for s, x, n in zip(songs, nll, lengths):
        s["fluency"] = {"log_ppl": x, "perplexity": math.exp(x), "tokens": n}
    del ref
    return {"model": spec.name, "songs": len(songs), "tokens": sum(lengths), "load_s": round(loaded, 2),
            "score_s": round(time.perf_counter() - t0 - loaded, 2)}


def _exp(v: float | None) -> float | None:
    return None if v is None else math.exp(v)


def system_perplexity(log_ppls: list[float]) -> dict:
    """Geometric-mean perplexity of a system's songs, with the Student t 95% interval of the mean log_ppl through
    exp: ``{perplexity, ci_low, ci_high, mean_log_ppl, n}``."""
    from lyrictool.stats import mean_ci95

    ci = mean_ci95(log_ppls)
    return {"perplexity": _exp(ci["mean"]), "ci_low": _exp(ci["ci_low"]), "ci_high": _exp(ci["ci_high"]),
            "mean_log_ppl": ci["mean"], "n": ci["n"]}


def perplexity_ratio(a: list[float | None], b: list[float | None], *, resamples: int, seed: int) -> dict:
    """``b``'s geometric-mean perplexity over ``a``'s on the same prompts (per-prompt log_ppl, aligned), with the
    paired bootstrap 95% interval: ``{ratio, ci_low, ci_high, significant, a, b, diff_log_ppl, n}``."""
    from lyrictool.stats import paired_bootstrap

    d = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    return {"ratio": _exp(d["diff"]), "ci_low": _exp(d["ci_low"]), "ci_high": _exp(d["ci_high"]),
            "significant": d["significant"], "a": _exp(d["a"]), "b": _exp(d["b"]), "diff_log_ppl": d["diff"],
            "n": d["n"]}


def song_log_ppls(songs: list[dict]) -> list[float | None]:
    return [(s.get("fluency") or {}).get("log_ppl") for s in songs]


def fmt_perplexity(p: dict | None) -> str:
    """``23.4 [21.0, 26.1]`` (a system's geometric mean and its interval; ``-`` when there is none)."""
    if not p or p.get("perplexity") is None:
        return "-"
    if p.get("ci_low") is None:
        return f"{p['perplexity']:.1f}"
    return f"{p['perplexity']:.1f} [{p['ci_low']:.1f}, {p['ci_high']:.1f}]"


def fmt_ratio(r: dict | None) -> str:
    """``×1.05 [0.98, 1.12]`` (a ratio of perplexities and its interval; ``-`` when there is none)."""
    if not r or r.get("ratio") is None:
        return "-"
    return f"×{r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
