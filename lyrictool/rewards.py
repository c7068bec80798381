"""Rewards for rejection sampling and online RL: rule rewards, the learned scorer, harmlessness.

A recipe lists the rewards it wants with weights::

    rewards:
      - {name: scorer, weight: 1.0, path: runs/score}                      # a trained `lyrictool score` folder
      - {name: rhyme, weight: 0.5}                                         # rule rewards from lyrictool.metrics
      - {name: safety, weight: 1.0, path: recipes/safety/blocklist.txt, override_below: 0.15}

Every component is a number per (controls, lyrics) pair; the total is the weighted sum.  Safety joins it in one of
three ways:

- ``override_below`` on a ``safety`` entry (the fixed-threshold form of LLaMA 2's rule, arXiv 2307.09288): below
  that value, or for a safety prompt, the total is the weighted safety reward alone;
- ``safety_rule`` (mode ``llama2``, :class:`SafetyRule`): R_model = R_safety if the prompt is a safety prompt or
  sigmoid(R_safety) < tau, else R_helpful (the ``scorer``); WHITEN(LOGIT(R_model)) x their common weight joins the
  weighted rule rewards.  tau is given, or chosen on labelled lyrics as the largest threshold whose unsafe
  detection has the asked precision (:func:`choose_tau`); whitening uses running statistics
  (:class:`RunningMoments`);
- ``safety_rule`` mode ``lagrangian`` (Safe RLHF): total = (weighted sum - lambda x cost) / (1 + lambda) with
  cost = 1 - sigmoid(R_safety); lambda starts at the safety weight and moves after each step by the mean cost of
  recent steps minus a threshold (:func:`lagrange_step`, a TrainerCallback from :func:`lagrangian_callbacks`).

A safety prompt is one whose data row has ``safety: true``, or whose topic, title or genre contains a term of a
blocklist (a ``safety`` or ``blocklist`` entry).

- Rule rewards (each in [0, 1], built on :func:`lyrictool.metrics.song_metrics`):
  ``rhyme`` = rhyme accuracy against the rhyme/scheme control, or rhyme density when none is asked;
  ``structure`` = structure accuracy against the structure control; ``line_length`` = share of lines with the
  asked number of characters; ``format`` = 1 if the text is well-formed lyrics (no leaked prompt, hints or loops);
  ``repetition`` = 1 - the share of lines that repeat an earlier line (:func:`lyrictool.metrics.repeated_lines`; 0
  for an empty song): not among the defaults, since a chorus sung twice counts as repeats; it keeps a round that
  rewards rhyme from choosing songs that loop one rhyming line.
  With no control to check, ``structure`` and ``line_length`` are 1 for any non-empty song (nothing to violate)
  and 0 for an empty one.
- ``scorer``: the learned lyrics scorer (:class:`Scorer`), ``sigmoid(score)`` so it sits in (0, 1) like the
  rules; the raw score is what ``lyrictool score --predict`` writes.
- ``safety``: ``sigmoid`` of a safety scorer's score when ``path`` is a model folder (``lyrictool score
  recipes/tiny/score-safety.yaml``); or 1 if the lyrics contain no term of a blocklist (one term per line,
  ``#`` comments), else 0.
- ``blocklist``: the blocklist as a cheap rule reward of its own (1 / 0 as above), next to a safety scorer.
- ``copying``: 0 if the lyrics repeat a span of 12 or more characters of a reference corpus (``path``: the
  training corpus, or a chinese-poetry file or folder), else 1 (:class:`CopyGuard`, docs/metrics.md#copying).

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

RULE_REWARDS = ("rhyme", "structure", "line_length", "format", "repetition")
#: The rule rewards a recipe without a ``rewards`` list gets.
DEFAULT_RULE_REWARDS = ("rhyme", "structure", "line_length", "format")
RewardName = Literal["scorer", "rhyme", "structure", "line_length", "format", "repetition", "safety", "blocklist",
                     "copying"]


class RewardSpec(Strict):
    """One reward component of a recipe's ``rewards`` list."""

    name: RewardName = Field(..., description="scorer, rhyme, structure, line_length, format, repetition, safety, "
                                               "blocklist or copying.")
    weight: float = Field(1.0, description="Weight in the total (the total is the weighted sum).")
    path: str | None = Field(
        None,
        description="scorer: a trained scorer folder (lyrictool score). safety: a safety scorer folder (or a "
                    "blocklist .txt). blocklist: a blocklist .txt (one term per line), a cheap rule reward. copying: the "
                    "reference corpus (lyrics rows, or a chinese-poetry file or folder).",
    )
    override_below: float | None = Field(
        None, ge=0.0, le=1.0,
        description="safety only (LLaMA 2): below this safety value, or for a safety prompt, the total is the "
                    "safety reward alone.",
    )
    batch_size: int = Field(16, gt=0, description="scorer/safety model: sequences per forward pass.")

    @model_validator(mode="after")
    def _check(self) -> RewardSpec:
        if self.name in ("scorer", "safety", "blocklist", "copying") and not self.path:
            what = {"scorer": "a trained scorer folder (lyrictool score)",
                    "safety": "a safety scorer folder (lyrictool score recipes/tiny/score-safety.yaml), or a "
                              "blocklist .txt such as recipes/safety/blocklist.txt",
                    "blocklist": "a blocklist .txt such as recipes/safety/blocklist.txt",
                    "copying": "the reference corpus: your training lyrics (.jsonl) or a chinese-poetry folder"
                    }[self.name]
            raise ValueError(f"reward {self.name} needs path: {what}")
        if self.name in RULE_REWARDS and self.path:
            raise ValueError(f"reward {self.name} is a rule reward and takes no path")
        if self.override_below is not None and self.name != "safety":
            raise ValueError("override_below applies to the safety reward only")
        return self


def default_rule_specs() -> list[RewardSpec]:
    return [RewardSpec(name=n) for n in DEFAULT_RULE_REWARDS]


class SafetyRule(Strict):
    """How the safety scorer joins the total: LLaMA 2's rule (``llama2``) or Safe RLHF's Lagrangian."""

    mode: Literal["llama2", "lagrangian"] = Field(
        "llama2",
        description="llama2: R_model = R_safety if the prompt is a safety prompt or sigmoid(R_safety) < tau, else "
                    "R_helpful; logit and whitening on R_model, then the weighted sum with the rule rewards. "
                    "lagrangian: total = (weighted sum - lambda x cost) / (1 + lambda), cost = 1 - sigmoid("
                    "R_safety), lambda raised while the mean cost of recent steps exceeds cost_threshold.")
    tau: float | None = Field(None, gt=0.0, lt=1.0,
                              description="llama2: a fixed threshold on sigmoid(R_safety) (else chosen on "
                                          "calibration).")
    calibration: str | None = Field(
        None, description="llama2: labelled lyrics {controls | prompt, lyrics, label: safe | unsafe} held out from "
                          "the safety scorer's training (e.g. builtin:safety-lyrics-calibration); tau = the largest "
                          "threshold whose unsafe detection (sigmoid < tau) has at least `precision`.")
    precision: float = Field(0.9, gt=0.0, le=1.0, description="llama2: the precision tau must reach on "
                                                                "calibration.")
    whiten: bool = Field(True, description="llama2: whiten logit(R_model) with running mean and std (LLaMA 2).")
    cost_threshold: float = Field(0.1, ge=0.0, le=1.0,
                                  description="lagrangian: the mean cost (1 - sigmoid(R_safety)) allowed.")
    lambda_lr: float = Field(0.5, gt=0.0, description="lagrangian: lambda += lambda_lr x (mean cost - threshold).")
    lambda_max: float = Field(20.0, gt=0.0, description="lagrangian: upper bound of lambda.")
    window: int = Field(10, ge=1, description="lagrangian: steps whose costs make the mean cost.")

    @model_validator(mode="after")
    def _check(self) -> SafetyRule:
        if self.mode == "llama2" and (self.tau is None) == (self.calibration is None):
            raise ValueError("give tau (a fixed threshold) or calibration (labelled lyrics to choose tau on, e.g. "
                             "builtin:safety-lyrics-calibration), one of the two")
        if self.mode == "lagrangian" and (self.tau is not None or self.calibration is not None):
            raise ValueError("tau and calibration belong to mode llama2; the lagrangian has cost_threshold")
        return self


def check_reward_specs(specs: Sequence[RewardSpec], *, where: str, key: str = "rewards",
                       rule: SafetyRule | None = None, rule_key: str = "safety_rule") -> None:
    """Recipe-level checks that need the list as a whole (names the recipe key); with ``rule``, that the safety
    rule has the scorers it chooses between and labelled calibration data."""
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
        if s.name == "safety" and not is_model_folder(p) and rule is not None:
            why = model_folder_problem(p) if p.is_dir() or not p.exists() else "a file, not a scorer folder"
            raise UserError(f"{key}[{i}].path: {s.path} is not a trained safety scorer ({why}), which {rule_key} "
                            "needs; train one with `lyrictool score recipes/tiny/score-safety.yaml` (a blocklist "
                            "goes in {name: blocklist})", where=where)
        if s.name == "copying" and not p.exists() and not s.path.startswith("builtin:"):
            raise UserError(f"{key}[{i}].path: {s.path}: no such file or folder (the copying reference corpus)",
                            where=where)
        if s.name == "blocklist" or (s.name == "safety" and not is_model_folder(p)):
            try:
                load_blocklist(p, key=f"{key}[{i}].path")
            except UserError as e:
                raise UserError(str(e), where=where) from None
    if rule is not None:
        check_rule(specs, rule, where=where, key=key, rule_key=rule_key)


def check_rule(specs: Sequence[RewardSpec], rule: SafetyRule, *, where: str, key: str, rule_key: str) -> None:
    by = {s.name: (i, s) for i, s in enumerate(specs)}
    if "safety" not in by:
        raise UserError(f"{rule_key}: needs a safety scorer in {key}: add {{name: safety, path: <the output_dir of "
                        "`lyrictool score recipes/tiny/score-safety.yaml`>}", where=where)
    i, safety = by["safety"]
    if safety.override_below is not None:
        raise UserError(f"{key}[{i}].override_below: the fixed-threshold override and {rule_key} exclude each other "
                        f"({rule_key} chooses tau on labelled data); remove override_below", where=where)
    if rule.mode == "llama2":
        if "scorer" not in by:
            raise UserError(f"{rule_key}: mode llama2 chooses between the helpful scorer and the safety scorer; add "
                            f"{{name: scorer, path: <a lyrictool score folder>}} to {key} (or use mode: lagrangian)",
                            where=where)
        if by["scorer"][1].weight != safety.weight:
            raise UserError(f"{key}: with {rule_key} (llama2) one score is chosen from scorer and safety, and their "
                            f"weight is its weight: give both the same weight (got {by['scorer'][1].weight:g} and "
                            f"{safety.weight:g})", where=where)
        if rule.calibration is not None:
            load_calibration(rule.calibration, key=f"{rule_key}.calibration")


# --------------------------------------------------------------------------------------------------------------
# Rule rewards


def rule_rewards(lyrics: str, controls: Any = None, scheme: str = "shisanzhe",
                 names: Sequence[str] = DEFAULT_RULE_REWARDS, strictness: str = "strict") -> dict[str, float]:
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
        "repetition": 1.0 - m["repeated_lines"] if m["n_lines"] else 0.0,
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
# LLaMA 2's threshold, whitening, Safe RLHF's multiplier


def load_calibration(source: str, *, key: str = "safety_rule.calibration") -> list[tuple[list[dict], str, bool]]:
    """Labelled lyrics ``{controls | prompt, lyrics, label: safe | unsafe}`` as (prompt messages, lyrics, unsafe)."""
    from lyrictool.data import load_records
    from lyrictool.data.pairs import row_prompt, row_text

    rows = []
    for rec in load_records(source, what=key):
        label = rec.data.get("label")
        if label not in ("safe", "unsafe"):
            raise UserError(f"key 'label' must be 'safe' or 'unsafe', got {label!r}", where=rec.where)
        rows.append((row_prompt(rec.data, rec.where), row_text(rec.data, "lyrics", rec.where, hint=""),
                     label == "unsafe"))
    for want in (True, False):
        if not any(unsafe == want for _, _, unsafe in rows):
            raise UserError(f"{key}: {source} has no {'unsafe' if want else 'safe'} row; choosing tau needs lyrics "
                            "of both labels")
    return rows


def choose_tau(p_safe: Sequence[float], unsafe: Sequence[bool], precision: float) -> dict[str, Any]:
    """The largest threshold tau whose unsafe detection (``p_safe < tau``) has at least ``precision``.

    Candidates are the midpoints between distinct sorted values (above the largest: halfway to 1), so each tau
    flags exactly the values at or below one observed value.  Raises ValueError when no tau reaches
    ``precision`` (the message gives the best one).
    """
    if len(p_safe) != len(unsafe) or not p_safe:
        raise ValueError("need as many labels as scores, and at least one")
    ranked = sorted(zip(p_safe, unsafe))
    n_unsafe = sum(unsafe)
    best: dict[str, Any] | None = None
    top = (0.0, 0.0)
    hits = 0
    for k, (v, u) in enumerate(ranked, 1):  # flag the k lowest: a threshold only between distinct values
        hits += u
        if k < len(ranked) and ranked[k][0] == v:
            continue
        prec = hits / k
        top = max(top, (prec, v))
        if prec >= precision:
            tau = (v + ranked[k][0]) / 2 if k < len(ranked) else (v + 1.0) / 2
            best = {"tau": tau, "precision": prec, "recall": hits / n_unsafe if n_unsafe else None, "flagged": k}
    if best is None:
        raise ValueError(f"no threshold reaches precision {precision:g} (best {top[0]:.3f}, flagging sigmoid <= "
                         f"{top[1]:.4f})")
    return {**best, "n": len(p_safe), "n_unsafe": n_unsafe, "target_precision": precision}


def logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


@dataclass
class RunningMoments:
    """Mean and standard deviation of every value seen so far (Chan et al.'s parallel update), for whitening."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def update(self, xs: Sequence[float]) -> None:
        if not xs:
            return
        n = len(xs)
        mean = sum(xs) / n
        m2 = sum((x - mean) ** 2 for x in xs)
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta ** 2 * self.count * n / total
        self.count = total

    def whiten(self, xs: Sequence[float], *, update: bool = True) -> list[float]:
        """(x - mean) / std with the statistics including ``xs`` (when ``update``); centred only while std ~ 0."""
        if update:
            self.update(xs)
        std = self.std
        return [(x - self.mean) / std if std > 1e-6 else x - self.mean for x in xs]


def lagrange_step(lam: float, mean_cost: float, rule: SafetyRule) -> float:
    """Projected gradient ascent on the multiplier: up while the mean cost exceeds the threshold, down (not
    below 0) while it is under, at most ``lambda_max``."""
    return min(rule.lambda_max, max(0.0, lam + rule.lambda_lr * (mean_cost - rule.cost_threshold)))


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
    """One candidate's rewards: the total and every component (for logging and the rejection-sampling rows).

    Under a safety rule, ``chosen`` is the score LLaMA 2's rule took (``safety`` or ``helpful``) and ``model`` that
    score after logit and whitening; under the lagrangian, ``cost`` is 1 - sigmoid(R_safety)."""

    total: float
    components: dict[str, float]
    overridden: bool = False
    chosen: str | None = None
    model: float | None = None
    cost: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"reward": round(self.total, 6), "rewards": {k: round(v, 6) for k, v in self.components.items()},
               **({"safety_override": True} if self.overridden else {})}
        if self.chosen is not None:
            out["safety_rule"] = {"chosen": self.chosen, "model": round(self.model, 6)}
        if self.cost is not None:
            out["safety_rule"] = {"cost": round(self.cost, 6)}
        return out


@dataclass
class Rewards:
    """The recipe's reward list, ready to score: models loaded once, blocklists read once.

    With a ``rule`` (:class:`SafetyRule`), tau is chosen on its calibration data when the rewards are built
    (``rule_report()`` says how), and the whitening statistics and the Lagrange multiplier live here, across
    batches: TRL's ``reward_weights`` are fixed when the trainer starts.
    """

    specs: list[RewardSpec]
    scheme: str = "shisanzhe"
    key: str = "rewards"
    strictness: str = "strict"
    rule: SafetyRule | None = None
    rule_key: str = "safety_rule"
    _scorers: dict[str, Scorer] = field(default_factory=dict, repr=False)
    _blocklists: dict[str, Blocklist] = field(default_factory=dict, repr=False)
    _copy_guard: CopyGuard | None = field(default=None, repr=False)
    _tau: dict[str, Any] | None = field(default=None, repr=False)
    moments: RunningMoments = field(default_factory=RunningMoments, repr=False)
    lam: float = 0.0
    _pending_costs: list[float] = field(default_factory=list, repr=False)
    _step_costs: list[float] = field(default_factory=list, repr=False)
    lambda_history: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.specs):
            where = f"{self.key}[{i}].path"
            if s.name == "scorer" or (s.name == "safety" and is_model_folder(s.path)):
                self._scorers[s.name] = Scorer(s.path, key=where, batch_size=s.batch_size)
            elif s.name == "copying":
                self._copy_guard = CopyGuard.from_sources([s.path], key=where)
            elif s.name in ("safety", "blocklist"):
                if Path(s.path).expanduser().is_dir():
                    raise UserError(f"{where}: {s.path} is a folder without config.json; give a blocklist .txt "
                                    "or a safety scorer folder")
                self._blocklists[s.name] = Blocklist(load_blocklist(s.path, key=where))
        if self.rule is not None:
            check_rule(self.specs, self.rule, where="recipe", key=self.key, rule_key=self.rule_key)
            if "safety" not in self._scorers:
                raise UserError(f"{self.rule_key}: the safety reward must be a safety scorer folder, not a blocklist")
            if self.rule.mode == "lagrangian":
                self.lam = next(s.weight for s in self.specs if s.name == "safety")
            elif self.rule.tau is not None:
                self._tau = {"tau": self.rule.tau, "source": "recipe"}
            else:
                self._tau = self.calibrate(self.rule.calibration, self.rule.precision)

    @classmethod
    def from_specs(cls, specs: Sequence[RewardSpec] | Sequence[dict], *, scheme: str = "shisanzhe",
                   key: str = "rewards", strictness: str = "strict", rule: SafetyRule | dict | None = None
                   ) -> Rewards:
        if isinstance(rule, dict):
            rule = SafetyRule.model_validate(rule)
        return cls([s if isinstance(s, RewardSpec) else RewardSpec.model_validate(s) for s in specs],
                   scheme=scheme, key=key, strictness=strictness, rule=rule)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def tau(self) -> float | None:
        return self._tau["tau"] if self._tau else None

    def calibrate(self, source: str, precision: float) -> dict[str, Any]:
        """tau chosen on labelled lyrics with the safety scorer (:func:`choose_tau`), with what it achieved."""
        rows = load_calibration(source, key=f"{self.rule_key}.calibration")
        raw = self._scorers["safety"].score([r[0] for r in rows], [r[1] for r in rows])
        try:
            chosen = choose_tau([sigmoid(x) for x in raw], [r[2] for r in rows], precision)
        except ValueError as e:
            raise UserError(f"{self.rule_key}.precision: on {source}, {e}; lower the precision, or give "
                            f"{self.rule_key}.tau") from None
        return {**chosen, "source": "calibration", "calibration": source}

    def rule_report(self) -> dict[str, Any] | None:
        """What summary.json records about the safety rule: tau and how it was chosen, the whitening statistics,
        the multiplier's history."""
        if self.rule is None:
            return None
        out: dict[str, Any] = {"mode": self.rule.mode}
        if self.rule.mode == "llama2":
            out["tau"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in (self._tau or {}).items()}
            out["whiten"] = self.rule.whiten
            if self.rule.whiten:
                out["whitening"] = {"count": self.moments.count, "mean": round(self.moments.mean, 6),
                                    "std": round(self.moments.std, 6)}
        else:
            out.update({"lambda": round(self.lam, 6), "lambda_history": [round(x, 6) for x in self.lambda_history],
                        "cost_threshold": self.rule.cost_threshold})
        return out

    def components(self, controls: Sequence[Any], lyrics: Sequence[str]) -> list[dict[str, float]]:
        """Every component for every pair (model components batched across the whole list)."""
        rules = [n for n in self.names if n in RULE_REWARDS]
        out = [rule_rewards(t, c, self.scheme, rules, self.strictness) for c, t in zip(controls, lyrics)]
        for name, scorer in self._scorers.items():
            for row, raw in zip(out, scorer.score([controls_dict(c) for c in controls], list(lyrics))):
                row[name] = sigmoid(raw)
        for name, blocklist in self._blocklists.items():
            for row, text in zip(out, lyrics):
                row[name] = blocklist.safety(text)
        if self._copy_guard is not None:
            for row, text in zip(out, lyrics):
                row["copying"] = self._copy_guard.safety(text)
        return out

    def safety_prompts(self, controls: Sequence[Any], tags: Sequence[bool | None] | None = None) -> list[bool]:
        """Safety prompts: the data's ``safety`` tag, or any blocklist's prompt check (a banned term in the topic,
        title or genre)."""
        tags = list(tags) if tags is not None else [None] * len(controls)
        return [bool(t) or any(b.is_safety_prompt(c) for b in self._blocklists.values())
                for c, t in zip(controls, tags)]

    def score(self, controls: Sequence[Any], lyrics: Sequence[str], safety_prompts: Sequence[bool | None] | None
              = None, *, update: bool = True) -> list[Scored]:
        """Total and components for every (controls, lyrics) pair.

        ``safety_prompts``: the prompts' ``safety`` tags (None: untagged).  ``update``: let this batch move the
        whitening statistics and count towards the multiplier's mean cost (training batches; not the
        before/after samples).
        """
        comps = self.components(controls, lyrics)
        flags = self.safety_prompts(controls, safety_prompts)
        if self.rule is None:
            return [Scored(total, c, overridden) for c, f in zip(comps, flags)
                    for total, overridden in [combine(c, self.specs, safety_prompt=f)]]
        weights = {s.name: s.weight for s in self.specs}
        if self.rule.mode == "lagrangian":
            costs = [1.0 - c["safety"] for c in comps]
            if update:
                self._pending_costs.extend(costs)
            out = []
            for c, cost in zip(comps, costs):
                base = sum(w * c[n] for n, w in weights.items() if n != "safety")
                out.append(Scored((base - self.lam * cost) / (1.0 + self.lam), c, cost=cost))
            return out
        tau = self.tau
        chosen = ["safety" if f or c["safety"] < tau else "helpful" for c, f in zip(comps, flags)]
        model = [logit(c["safety"] if ch == "safety" else c["scorer"]) for c, ch in zip(comps, chosen)]
        if self.rule.whiten:
            model = self.moments.whiten(model, update=update)
        w_model = weights["safety"]  # == weights["scorer"] (check_rule)
        out = []
        for c, ch, m in zip(comps, chosen, model):
            rest = sum(w * c[n] for n, w in weights.items() if n not in ("scorer", "safety"))
            out.append(Scored(w_model * m + rest, c, chosen=ch, model=m))
        return out

    def end_step(self, *, sync: bool = False) -> float | None:
        """Lagrangian: the costs scored since the last call make one step; lambda moves by the mean cost of the
        last ``window`` steps.  Returns the new lambda (None without a lagrangian or without new costs).

        ``sync``: every process calls this at the same point (the trainer callback) and the step's cost is the mean
        over all processes' samples, so every process keeps the same lambda."""
        if self.rule is None or self.rule.mode != "lagrangian":
            return None
        total, count = sum(self._pending_costs), len(self._pending_costs)
        self._pending_costs.clear()
        if sync:
            from lyrictool.distributed import gather_object

            parts = gather_object((total, count))  # collective; [(total, count)] in one process
            total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
        if not count:
            return None
        self._step_costs.append(total / count)
        recent = self._step_costs[-self.rule.window:]
        self.lam = lagrange_step(self.lam, sum(recent) / len(recent), self.rule)
        self.lambda_history.append(self.lam)
        return self.lam


def lagrangian_callbacks(rewards: Rewards) -> list:
    """A TrainerCallback that ends a multiplier step after every optimiser step (empty without a lagrangian)."""
    if rewards.rule is None or rewards.rule.mode != "lagrangian":
        return []
    from transformers import TrainerCallback

    class LagrangeMultiplier(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            rewards.end_step(sync=True)  # every process, every step: one lambda across processes

    return [LagrangeMultiplier()]


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
    plus ``total`` with weight 1 that applies the recipe weights and the safety override or rule (a weighted sum in
    TRL could not express either).  The components of a batch are computed once and shared.  Controls travel as a
    dataset column ``controls`` (a dict, or a JSON string), the prompts' safety tags as ``safety_prompt``; rows
    without them are scored without controls, untagged.  Under a safety rule ``total`` also logs, through TRL's
    ``log_metric``, the share of samples scored by the safety scorer (llama2) or lambda and the mean cost.
    """
    rewards = specs if isinstance(specs, Rewards) else Rewards.from_specs(specs, scheme=scheme, key=key)
    cache: dict[str, Any] = {"key": None, "scored": None}

    def scored(completions, controls, safety_prompt) -> list[Scored]:
        texts = [completion_text(c) for c in completions]
        ctl = list(controls) if controls is not None else [None] * len(texts)
        tags = list(safety_prompt) if safety_prompt is not None else None
        k = (tuple(texts), tuple(repr(c) for c in ctl), tuple(tags or ()))
        if cache["key"] != k:
            cache["key"], cache["scored"] = k, rewards.score(ctl, texts, tags)
        return cache["scored"]

    def make(name: str):
        def f(prompts=None, completions=None, controls=None, safety_prompt=None, log_metric=None, **_: Any
              ) -> list[float]:
            batch = scored(completions, controls, safety_prompt)
            if name == "total" and log_metric is not None and rewards.rule is not None:
                if rewards.rule.mode == "llama2":
                    log_metric("safety_rule/chose_safety", sum(s.chosen == "safety" for s in batch) / len(batch))
                else:
                    log_metric("safety_rule/lambda", rewards.lam)
                    log_metric("safety_rule/cost", sum(s.cost for s in batch) / len(batch))
            return [s.total if name == "total" else s.components[name] for s in batch]

        f.__name__ = f.__qualname__ = name
        return f

    funcs = [make(n) for n in rewards.names] + [make("total")]
    return funcs, [0.0] * len(rewards.names) + [1.0]
