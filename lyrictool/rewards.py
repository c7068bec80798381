"""Rewards for rejection sampling and online RL: rule rewards, the learned scorer, harmlessness.

A recipe lists the rewards it wants with weights::

    rewards:
      - {name: scorer, weight: 1.0, path: runs/score}                      # a trained `lyrictool score` folder
      - {name: rhyme, weight: 0.5}                                         # rule rewards from lyrictool.metrics
      - {name: safety, weight: 1.0, path: recipes/safety/blocklist.txt, override_below: 0.15}

Every component is a number per (controls, lyrics) pair; the total is the weighted sum.  LLaMA 2's safety rule
(arXiv 2307.09288): when a safety reward has ``override_below`` and it falls below that threshold, or the prompt
itself is a safety prompt (its controls contain a blocked term), the total is the weighted safety reward alone,
so no helpfulness can buy back unsafe lyrics.

- Rule rewards (each in [0, 1], built on :func:`lyrictool.metrics.song_metrics`):
  ``rhyme`` = rhyme accuracy against the rhyme/scheme control, or rhyme density when none is asked;
  ``structure`` = structure accuracy against the structure control; ``line_length`` = share of lines with the
  asked number of characters; ``format`` = 1 if the text is well-formed lyrics (no leaked prompt, hints or loops).
  With no control to check, ``structure`` and ``line_length`` are 1 for any non-empty song (nothing to violate)
  and 0 for an empty one.
- ``scorer``: the learned lyrics scorer (:class:`Scorer`), ``sigmoid(score)`` so it sits in (0, 1) like the
  rules; the raw score is what ``lyrictool score --predict`` writes.
- ``safety``: 1 if the lyrics contain no term of a blocklist (one term per line,
  ``#`` comments), else 0; or, when ``path`` is a model folder, ``sigmoid`` of a safety scorer's score.

No torch at import: it is imported when a scorer model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lyrictool.controls import controls_dict, prompt_messages
from lyrictool.errors import UserError
from lyrictool.recipes import Strict

RULE_REWARDS = ("rhyme", "structure", "line_length", "format")
RewardName = Literal["scorer", "rhyme", "structure", "line_length", "format", "safety"]


class RewardSpec(Strict):
    """One reward component of a recipe's ``rewards`` list."""

    name: RewardName = Field(..., description="scorer, rhyme, structure, line_length, format or safety.")
    weight: float = Field(1.0, description="Weight in the total (the total is the weighted sum).")
    path: str | None = Field(
        None,
        description="scorer: a trained scorer folder (lyrictool score). safety: a blocklist .txt (one term per "
                    "line) or a safety scorer folder.",
    )
    override_below: float | None = Field(
        None, ge=0.0, le=1.0,
        description="safety only (LLaMA 2): below this safety value, or for a safety prompt, the total is the "
                    "safety reward alone.",
    )
    batch_size: int = Field(16, gt=0, description="scorer/safety model: sequences per forward pass.")

    @model_validator(mode="after")
    def _check(self) -> RewardSpec:
        if self.name in ("scorer", "safety") and not self.path:
            what = "a trained scorer folder (lyrictool score)" if self.name == "scorer" else \
                "a blocklist .txt such as recipes/safety/blocklist.txt, or a safety scorer folder"
            raise ValueError(f"reward {self.name} needs path: {what}")
        if self.name in RULE_REWARDS and self.path:
            raise ValueError(f"reward {self.name} is a rule reward and takes no path")
        if self.override_below is not None and self.name != "safety":
            raise ValueError("override_below applies to the safety reward only")
        return self


def default_rule_specs() -> list[RewardSpec]:
    return [RewardSpec(name=n) for n in RULE_REWARDS]


def check_reward_specs(specs: Sequence[RewardSpec], *, where: str, key: str = "rewards") -> None:
    """Recipe-level checks that need the list as a whole (names the recipe key)."""
    if not specs:
        raise UserError(f"{key}: empty list; name at least one reward (e.g. {{name: rhyme}})", where=where)
    names = [s.name for s in specs]
    for name in set(names):
        if names.count(name) > 1:
            raise UserError(f"{key}: reward {name} listed twice; give it one entry with one weight", where=where)
    if all(s.weight == 0 for s in specs):
        raise UserError(f"{key}: every weight is 0, so every candidate would tie", where=where)
    for i, s in enumerate(specs):  # the files, without loading any model (for --dry-run)
        if s.path is None:
            continue
        p = Path(s.path).expanduser()
        if s.name == "scorer" and not is_model_folder(p):
            why = model_folder_problem(p)
            raise UserError(f"{key}[{i}].path: {s.path} is not a trained scorer ({why}); train one with "
                            "`lyrictool score RECIPE` and point here at its output_dir", where=where)
        if s.name == "safety" and not is_model_folder(p):
            try:
                load_blocklist(p, key=f"{key}[{i}].path")
            except UserError as e:
                raise UserError(str(e), where=where) from None


# --------------------------------------------------------------------------------------------------------------
# Rule rewards


def rule_rewards(lyrics: str, controls: Any = None, scheme: str = "shisanzhe",
                 names: Sequence[str] = RULE_REWARDS, strictness: str = "strict") -> dict[str, float]:
    """The rule rewards of one song, each in [0, 1] (see the module docstring for the definitions).

    ``strictness="near"`` (the recipe's ``data.rhyme_strictness``) scores rhyme with near rhymes accepted.
    """
    from lyrictool.metrics import song_metrics

    m = song_metrics(lyrics, controls_dict(controls), scheme)
    sung = 1.0 if m["n_lines"] else 0.0
    suffix = "_near" if strictness == "near" else ""
    accuracy, density = m["rhyme_accuracy" + suffix], m["rhyme_density" + suffix]
    values = {
        "rhyme": accuracy if accuracy is not None else density,
        "structure": m["structure_accuracy"] if m["structure_accuracy"] is not None else sung,
        "line_length": m["line_length_accuracy"] if m["line_length_accuracy"] is not None else sung,
        "format": m["format_validity"],
    }
    return {n: float(values[n]) for n in names}


# --------------------------------------------------------------------------------------------------------------
# Harmlessness


def load_blocklist(path: str | Path, *, key: str = "path") -> list[str]:
    """Banned terms, one per line; blank lines and ``#`` comments ignored."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{key}: blocklist not found: {path}") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise UserError(f"{key}: {path} is not a UTF-8 text blocklist (one term per line)") from None
    terms = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    terms = [t for t in terms if t]
    if not terms:
        raise UserError(f"{key}: blocklist {path} has no terms")
    return terms


@dataclass
class Blocklist:
    terms: list[str]

    def hits(self, text: str) -> list[str]:
        t = text or ""
        return [term for term in self.terms if term in t]

    def safety(self, text: str) -> float:
        """1.0 when no banned term occurs, else 0.0 (one banned term already makes lyrics unusable)."""
        return 0.0 if self.hits(text) else 1.0

    def is_safety_prompt(self, controls: Any) -> bool:
        """A prompt that asks for banned content: its free-text controls contain a banned term."""
        c = controls_dict(controls)
        return any(self.hits(str(c.get(k) or "")) for k in ("topic", "title", "genre"))


@dataclass
class CopyGuard:
    """Verbatim copying as a safety rule: lyrics that repeat a long span of the reference corpus are unsafe.

    ``index``: a :class:`lyrictool.copying.ReferenceIndex` (the training corpus, the 宋词/元曲; built once by
    :meth:`from_sources`).  A span of ``max_span`` or more characters (normalized, across line breaks) found in
    the reference makes the lyrics unsafe (0.0), like a blocklist hit; shorter shared phrases are what any lyric
    shares with its tradition.  A rule of its own, so that it can join the blocklist or a safety scorer (the
    lowest of them).
    """

    index: Any
    max_span: int = 12

    @classmethod
    def from_sources(cls, sources: Sequence[str], *, max_span: int = 12, key: str = "reference") -> CopyGuard:
        from lyrictool.data.reference import reference_index

        if max_span < 2:
            raise UserError(f"{key}: max_span must be at least 2 characters (got {max_span})")
        return cls(reference_index(sources, key=key), max_span)

    def copied(self, text: str) -> str | None:
        """The longest span of ``text`` found in the reference when it is ``max_span`` or longer, else None."""
        found = self.index.song(text or "")
        return found.span if found.lcs >= self.max_span else None

    def safety(self, text: str) -> float:
        """1.0 when no long span is copied, else 0.0."""
        return 0.0 if self.copied(text) is not None else 1.0


# --------------------------------------------------------------------------------------------------------------
# The learned scorer


def model_folder_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a loadable model folder (config.json and a tokenizer), or None if it is one."""
    from lyrictool.modeling import TOKENIZER_FILES, has_tokenizer

    p = Path(path).expanduser()
    if not p.exists():
        return "no such folder"
    if not p.is_dir():
        return "not a folder"
    if not (p / "config.json").exists():
        return "no config.json"
    if not has_tokenizer(p):
        return f"no tokenizer: {' or '.join(TOKENIZER_FILES[:2])}"
    return None


def is_model_folder(path: str | Path) -> bool:
    return model_folder_problem(path) is None


class Scorer:
    """A trained lyrics scorer (``lyrictool score`` output): scores (controls, lyrics) pairs in batches.

    The input is formatted exactly as TRL's RewardTrainer saw it in training: the conversation
    ``build_messages(controls, lyrics)`` (prompt + completion) through the tokenizer's chat template.
    """

    def __init__(self, path: str | Path, *, key: str = "path", batch_size: int = 16, device: str | None = None,
                 model=None, tokenizer=None):
        self.path = str(path)
        self.batch_size = batch_size
        if model is not None:  # an in-memory model (e.g. right after training)
            self.model, self.tokenizer = model, tokenizer
        else:
            self.model, self.tokenizer = self._load(path, key, device)
        self.model.eval()

    @staticmethod
    def _load(path, key: str, device: str | None):
        import json

        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        p = Path(path).expanduser()
        why = model_folder_problem(p)
        if why is not None:
            raise UserError(f"{key}: {path} is not a trained scorer ({why}); train one with `lyrictool score "
                            "RECIPE` and point here at its output_dir")
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
        archs = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise UserError(f"{key}: {path} is a {', '.join(archs) or 'model'} (not a scorer with a score head); "
                            "give the output_dir of `lyrictool score`")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(p, num_labels=1)
            tokenizer = AutoTokenizer.from_pretrained(p)
        except (OSError, ValueError) as e:
            raise UserError(f"{key}: cannot load scorer {path}: {str(e).strip().splitlines()[0]}") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if device is not None:
            return model.to(device), tokenizer
        from lyrictool.modeling import to_accelerator

        to_accelerator(model)  # this process's GPU (LOCAL_RANK) when there is one, as for every inference model
        return model, tokenizer

    def encode(self, prompt: Any, lyrics: str) -> list[int]:
        """Token ids of one (prompt, lyrics) pair; ``prompt`` is controls or a list of chat messages."""
        out = self.tokenizer.apply_chat_template(prompt_messages(prompt) + [{"role": "assistant", "content": lyrics}],
                                                 tokenize=True, return_dict=True)
        return list(out["input_ids"])

    def score(self, prompts: Sequence[Any], lyrics: Sequence[str], *, progress: Callable[[int], None] | None = None
              ) -> list[float]:
        """Raw scores (the head's logit), one per pair; ``prompts`` are controls (or chat messages).

        ``progress(n)`` is called after each batch of ``n`` pairs.
        """
        import torch

        if len(prompts) != len(lyrics):
            raise ValueError("prompts and lyrics must have the same length")
        device = next(self.model.parameters()).device
        limit = getattr(self.tokenizer, "model_max_length", None) or 10**9
        scores: list[float] = []
        for start in range(0, len(lyrics), self.batch_size):
            ids = [self.encode(c, t)[:limit] for c, t in zip(prompts[start:start + self.batch_size],
                                                             lyrics[start:start + self.batch_size])]
            enc = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt", padding_side="right")
            with torch.inference_mode():
                logits = self.model(input_ids=enc["input_ids"].to(device),
                                    attention_mask=enc["attention_mask"].to(device)).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
            if progress is not None:
                progress(len(ids))
        return scores


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# --------------------------------------------------------------------------------------------------------------
# Combination


def combine(components: dict[str, float], specs: Sequence[RewardSpec], *, safety_prompt: bool = False
            ) -> tuple[float, bool]:
    """Weighted total of the components, with LLaMA 2's safety override. Returns (total, overridden)."""
    safety = next((s for s in specs if s.name == "safety"), None)
    if safety is not None and safety.override_below is not None and \
            (safety_prompt or components["safety"] < safety.override_below):
        return safety.weight * components["safety"], True
    return sum(s.weight * components[s.name] for s in specs), False


@dataclass
class Scored:
    """One candidate's rewards: the total and every component (for logging and the rejection-sampling rows)."""

    total: float
    components: dict[str, float]
    overridden: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"reward": round(self.total, 6), "rewards": {k: round(v, 6) for k, v in self.components.items()},
                **({"safety_override": True} if self.overridden else {})}


@dataclass
class Rewards:
    """The recipe's reward list, ready to score: models loaded once, blocklists read once."""

    specs: list[RewardSpec]
    scheme: str = "shisanzhe"
    key: str = "rewards"
    strictness: str = "strict"
    _scorers: dict[str, Scorer] = field(default_factory=dict, repr=False)
    _blocklist: Blocklist | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.specs):
            where = f"{self.key}[{i}].path"
            if s.name == "scorer" or (s.name == "safety" and is_model_folder(s.path)):
                self._scorers[s.name] = Scorer(s.path, key=where, batch_size=s.batch_size)
            elif s.name == "safety":
                if Path(s.path).expanduser().is_dir():
                    raise UserError(f"{where}: {s.path} is a folder without config.json; give a blocklist .txt "
                                    "or a safety scorer folder")
                self._blocklist = Blocklist(load_blocklist(s.path, key=where))

    @classmethod
    def from_specs(cls, specs: Sequence[RewardSpec] | Sequence[dict], *, scheme: str = "shisanzhe",
                   key: str = "rewards", strictness: str = "strict") -> Rewards:
        return cls([s if isinstance(s, RewardSpec) else RewardSpec.model_validate(s) for s in specs],
                   scheme=scheme, key=key, strictness=strictness)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def components(self, controls: Sequence[Any], lyrics: Sequence[str]) -> list[dict[str, float]]:
        """Every component for every pair (model components batched across the whole list)."""
        rules = [n for n in self.names if n in RULE_REWARDS]
        out = [rule_rewards(t, c, self.scheme, rules, self.strictness) for c, t in zip(controls, lyrics)]
        for name, scorer in self._scorers.items():
            for row, raw in zip(out, scorer.score([controls_dict(c) for c in controls], list(lyrics))):
                row[name] = sigmoid(raw)
        if self._blocklist is not None:
            for row, text in zip(out, lyrics):
                row["safety"] = self._blocklist.safety(text)
        return out

    def score(self, controls: Sequence[Any], lyrics: Sequence[str]) -> list[Scored]:
        """Total and components for every (controls, lyrics) pair."""
        results = []
        for c, comps in zip(controls, self.components(controls, lyrics)):
            safety_prompt = self._blocklist is not None and self._blocklist.is_safety_prompt(c)
            total, overridden = combine(comps, self.specs, safety_prompt=safety_prompt)
            results.append(Scored(total, comps, overridden))
        return results


def combined(rewards: Rewards | Sequence[RewardSpec], controls: Sequence[Any], lyrics: Sequence[str],
             *, scheme: str = "shisanzhe") -> list[Scored]:
    """Score pairs with a reward list: ``[Scored(total, components, overridden)]``."""
    if not isinstance(rewards, Rewards):
        rewards = Rewards.from_specs(rewards, scheme=scheme)
    return rewards.score(controls, lyrics)


# --------------------------------------------------------------------------------------------------------------
# TRL reward functions (GRPOTrainer / RLOOTrainer)


def completion_text(completion: Any) -> str:
    """A TRL completion (a string, or a conversational list of messages) as plain lyrics, hints stripped."""
    from lyrictool.lyrics import strip_hints

    if isinstance(completion, list):
        completion = "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return strip_hints(str(completion or "")).strip()


def reward_funcs(specs: Sequence[RewardSpec] | Rewards, *, scheme: str = "shisanzhe", key: str = "rewards"
                 ) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """Callables and weights for TRL's ``reward_funcs`` / ``reward_weights``.

    One function per component (named after it, so TRL logs each component's mean per step) with weight 0,
    plus ``total`` with weight 1 that applies the recipe weights and the safety override (a weighted sum in TRL
    could not express the override).  The components of a batch are computed once and shared.  Controls
    travel as a dataset column ``controls`` (a dict, or a JSON string); rows without it are scored without
    controls.
    """
    rewards = specs if isinstance(specs, Rewards) else Rewards.from_specs(specs, scheme=scheme, key=key)
    cache: dict[str, Any] = {"key": None, "scored": None}

    def scored(completions, controls) -> list[Scored]:
        texts = [completion_text(c) for c in completions]
        ctl = list(controls) if controls is not None else [None] * len(texts)
        k = (tuple(texts), tuple(repr(c) for c in ctl))
        if cache["key"] != k:
            cache["key"], cache["scored"] = k, rewards.score(ctl, texts)
        return cache["scored"]

    def make(name: str):
        def f(prompts=None, completions=None, controls=None, **_: Any) -> list[float]:
            return [s.total if name == "total" else s.components[name] for s in scored(completions, controls)]

        f.__name__ = f.__qualname__ = name
        return f

    funcs = [make(n) for n in rewards.names] + [make("total")]
    return funcs, [0.0] * len(rewards.names) + [1.0]
