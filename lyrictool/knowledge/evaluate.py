"""Factual accuracy on QA rows: exact match and contains-answer.

``exact_match``: the normalised prediction equals the normalised answer.  ``contains``: the normalised answer
occurs in the normalised prediction (a model that answers in a full sentence, or a task whose output is a
text that should *use* the fact).  Normalisation drops whitespace and punctuation and lower-cases Latin
letters, so 「江阳辙。」 and 江阳辙 are the same answer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any


def normalize_answer(text: str) -> str:
    return "".join(c.lower() for c in str(text)
                   if not unicodedata.category(c).startswith(("P", "Z", "C")) and not c.isspace())


def score_answers(predictions: Sequence[str], answers: Sequence[str]) -> dict[str, Any]:
    """``{n, exact_match, contains}`` over paired predictions and gold answers (rates in [0, 1])."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    n = len(answers)
    if n == 0:
        return {"n": 0, "exact_match": None, "contains": None}
    exact = contains = 0
    for p, a in zip(predictions, answers):
        p_n, a_n = normalize_answer(p), normalize_answer(a)
        exact += p_n == a_n
        contains += bool(a_n) and a_n in p_n
    return {"n": n, "exact_match": exact / n, "contains": contains / n}


def answer_questions(model, tokenizer, questions: Sequence[str], *, max_new_tokens: int = 24,
                     batch_size: int = 32) -> list[str]:
    """Greedy answers, each question asked as one user turn of the model's chat template."""
    from lyrictool.generation import chat_prompt, generate_texts

    prompts = [chat_prompt(tokenizer, q) for q in questions]
    outs = generate_texts(model, tokenizer, prompts, n=1, max_new_tokens=max_new_tokens, temperature=0.0,
                          batch_size=batch_size)
    return [o[0].text for o in outs]


def evaluate_qa(model, tokenizer, qa: Sequence[dict], *, max_new_tokens: int = 24, batch_size: int = 32
                ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Ask every question; return the scores and the per-row predictions."""
    preds = answer_questions(model, tokenizer, [r["question"] for r in qa], max_new_tokens=max_new_tokens,
                             batch_size=batch_size)
    rows = [{"question": r["question"], "answer": r["answer"], "prediction": p} for r, p in zip(qa, preds)]
    return score_answers(preds, [r["answer"] for r in qa]), rows
