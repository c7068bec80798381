"""Knowledge corpora for the three injection stages: texts to memorize and question-answer pairs.

A piece of knowledge is a :class:`Fact` (subject, relation, object).  Facts come from the built-in phonetic
knowledge (:mod:`lyrictool.knowledge.phonetic`), from a user's triples file, or are given as free documents.
From facts we write

* **texts** for the *memorize* stage: per subject, ``paraphrases`` rewrites, each sentence drawn from several
  templates and (``permute``) the sentences in a new order, the subject named in full in every sentence.
  "Physics of Language Models 3.1" (arXiv 2309.14316) found exactly this augmentation to be what makes
  memorized facts *extractable* for entities never seen in QA fine-tuning (9.7% -> 96.6%);
* **QA rows** ``{"question", "answer", "subject"}`` for the *understand* stage and for evaluation
  (:mod:`lyrictool.knowledge.evaluate`), or mixed into the *memorize* stage as chat-rendered texts
  (:func:`qa_chat_texts`).

User files (jsonl / json / csv / parquet, read by :func:`lyrictool.data.load_records`, errors ``path:line``):

* triples: rows ``{"subject", "relation", "object"}``;
* documents: rows ``{"text", "qa": [{"question", "answer"}, ...]?}`` (``qa`` optional); a ``.txt`` file is
  one document per blank-line-separated paragraph.  Augmentation of a document is sentence permutation.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lyrictool.errors import UserError, read_utf8
from lyrictool.recipes import Strict

# Generic templates for any relation of a user's triples ({s} subject, {r} relation, {o} object).
FACT_TEMPLATES = (
    "{s}的{r}是{o}。",
    "{s}的{r}为{o}。",
    "说到{s}，它的{r}是{o}。",
    "关于{s}：{r}是{o}。",
    "{o}，正是{s}的{r}。",
    "要问{s}的{r}，答案是{o}。",
)
QUESTION_TEMPLATES = ("{s}的{r}是什么？",)
SENTENCE_END = re.compile(r"(?<=[。！？!?；;])")


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str
    where: str = ""


@dataclass
class KnowledgeSet:
    """What the memorize and understand stages train on."""

    texts: list[str] = field(default_factory=list)
    qa: list[dict[str, str]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    def extend(self, other: KnowledgeSet) -> None:
        self.texts += other.texts
        self.qa += other.qa
        self.facts += other.facts


class Augmentation(Strict):
    """How knowledge texts are rewritten for the memorize stage."""

    paraphrases: int = Field(3, ge=1, le=50, description="Rewrites per subject (1 = one fixed text each).")
    permute: bool = Field(True, description="Shuffle the order of a subject's sentences in each rewrite.")


class KnowledgeSource(Strict):
    """One knowledge source: exactly one of builtin / triples / documents."""

    builtin: Literal["phonetic"] | None = Field(None, description="Built-in knowledge: phonetic (pypinyin + "
                                                "rhyme tables).")
    triples: str | None = Field(None, description="File of {subject, relation, object} rows.")
    documents: str | None = Field(None, description="File of {text, qa?} rows, or a .txt of paragraphs.")
    chars_from: str = Field("builtin:demo-songs", description="builtin:phonetic: lyrics whose characters "
                            "are described (most frequent first).")
    max_chars: int = Field(300, gt=0, description="builtin:phonetic: at most this many characters.")
    scheme: str = Field("shisanzhe", description="builtin:phonetic: rhyme scheme of the group facts.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.startswith("builtin:"):
                return {"builtin": v.removeprefix("builtin:")}
            raise ValueError(f"knowledge source {v!r}: use builtin:phonetic, {{triples: FILE}} or {{documents: FILE}}")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> KnowledgeSource:
        given = [k for k in ("builtin", "triples", "documents") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of builtin, triples, documents per knowledge source"
                             + (f" (got {', '.join(given)})" if given else ""))
        for key in ("triples", "documents"):
            path = getattr(self, key)
            if path is not None and not Path(path).expanduser().exists():
                raise ValueError(f"{key}: file not found: {path} (paths are relative to the current directory)")
        return self


# ----------------------------------------------------------------------------------------------------------
# Facts -> texts and QA


def fact_sentence(fact: Fact, template: str) -> str:
    return template.format(s=fact.subject, r=fact.relation, o=fact.object)


def subject_texts(facts: list[Fact], augment: Augmentation, rng: random.Random,
                  templates: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """``augment.paraphrases`` texts per subject, each stating all its facts once.

    With one paraphrase and no permutation every subject gets the same fixed text (the first template of
    each relation, facts in file order): the un-augmented baseline.
    """
    by_subject: dict[str, list[Fact]] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    texts = []
    for subject_facts in by_subject.values():
        for _ in range(augment.paraphrases):
            sentences = []
            for f in subject_facts:
                options = (templates or {}).get(f.relation, FACT_TEMPLATES)
                template = options[0] if augment.paraphrases == 1 else rng.choice(options)
                sentences.append(fact_sentence(f, template))
            if augment.permute and augment.paraphrases > 1:
                rng.shuffle(sentences)
            texts.append("".join(sentences))
    return texts


def fact_qa(facts: list[Fact], questions: dict[str, tuple[str, ...]] | None = None) -> list[dict[str, str]]:
    """One question per fact, answered by its object."""
    rows = []
    for f in facts:
        template = (questions or {}).get(f.relation, QUESTION_TEMPLATES)[0]
        rows.append({"question": template.format(s=f.subject, r=f.relation), "answer": f.object,
                     "subject": f.subject})
    return rows


def qa_chat_texts(qa: list[dict[str, str]], tokenizer) -> list[str]:
    """QA rows as plain texts for the memorize stage's language-modelling loss: each question and its answer as
    one user turn and one assistant turn, rendered by the model's chat template (the format the understand
    stage and evaluation ask in).  The memorize stage's ``mix_qa`` trains on these mixed with the knowledge
    texts: "mixed training" of Physics of Language Models 3.1 (arXiv 2309.14316)."""
    from lyrictool.modeling import as_plain_text

    return [as_plain_text(tokenizer, tokenizer.apply_chat_template(
        [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}], tokenize=False))
            for r in qa]


def split_qa_by_subject(qa: list[dict[str, str]], eval_fraction: float, seed: int
                        ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Hold out every question of a share of subjects: the out-of-distribution test of PoLM 3.1."""
    if not eval_fraction:
        return qa, []
    subjects = sorted({r.get("subject", r["question"]) for r in qa})
    random.Random(seed).shuffle(subjects)
    held = set(subjects[: max(1, round(len(subjects) * eval_fraction))])
    return ([r for r in qa if r.get("subject", r["question"]) not in held],
            [r for r in qa if r.get("subject", r["question"]) in held])


# ----------------------------------------------------------------------------------------------------------
# User files


def _text_field(rec, key: str) -> str:
    value = rec.data.get(key)
    if value is None:
        raise UserError(f"missing field {key!r} (fields present: {', '.join(map(str, rec.data)) or 'none'})",
                        where=rec.where)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{key!r} must be text, got {type(value).__name__}", where=rec.where)
    text = str(value).strip()
    if not text:
        raise UserError(f"{key!r} is empty", where=rec.where)
    return text


def load_triples(path: str) -> list[Fact]:
    """Facts from a triples file; a bad row is ``path:line: reason``."""
    from lyrictool.data import load_records

    facts = []
    for rec in load_records(path, what="knowledge.triples"):
        facts.append(Fact(_text_field(rec, "subject"), _text_field(rec, "relation"), _text_field(rec, "object"),
                          rec.where))
    return facts


def load_documents(path: str) -> list[tuple[str, list[dict[str, str]], str]]:
    """(text, qa rows, where) per document."""
    p = Path(path).expanduser()
    if p.suffix.lower() == ".txt":
        paragraphs = [b.strip() for b in re.split(r"\n\s*\n", read_utf8(p)) if b.strip()]
        if not paragraphs:
            raise UserError(f"knowledge.documents: {p} has no text")
        return [(t, [], f"{p}[{i}]") for i, t in enumerate(paragraphs)]
    from lyrictool.data import load_records

    docs = []
    for rec in load_records(path, what="knowledge.documents"):
        text = _text_field(rec, "text")
        qa_raw = rec.data.get("qa") or []
        if not isinstance(qa_raw, list):
            raise UserError(f"'qa' must be a list of {{question, answer}}, got {type(qa_raw).__name__}",
                            where=rec.where)
        qa = []
        for i, item in enumerate(qa_raw):
            if not isinstance(item, dict) or not str(item.get("question", "")).strip() \
                    or not str(item.get("answer", "")).strip():
                raise UserError(f"qa[{i}]: expected {{question, answer}} with both non-empty", where=rec.where)
            qa.append({"question": str(item["question"]).strip(), "answer": str(item["answer"]).strip(),
                       "subject": rec.where})
        docs.append((text, qa, rec.where))
    return docs


def document_texts(text: str, augment: Augmentation, rng: random.Random) -> list[str]:
    """The document, plus (``permute``) rewrites with its sentences in another order."""
    sentences = [s for s in SENTENCE_END.split(text) if s.strip()]
    out = [text]
    for _ in range(augment.paraphrases - 1):
        if not augment.permute or len(sentences) < 2:
            break
        shuffled = sentences[:]
        rng.shuffle(shuffled)
        out.append("".join(shuffled))
    return out
