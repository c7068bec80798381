"""A recipe's knowledge sources -> one :class:`~lyrictool.knowledge.KnowledgeSet`.

Its own module because it reaches the built-in sources (:mod:`lyrictool.knowledge.phonetic`), which build on the
package's facts and texts: the package never imports them back, so no two modules import each other.
"""

from __future__ import annotations

import random

from lyrictool.knowledge import (
    Augmentation,
    KnowledgeSet,
    KnowledgeSource,
    document_texts,
    fact_qa,
    load_documents,
    load_triples,
    subject_texts,
)
from lyrictool.knowledge.phonetic import phonetic_knowledge


def build_knowledge(sources: list[KnowledgeSource], augment: Augmentation, seed: int = 0) -> KnowledgeSet:
    """Texts and QA of every source of a recipe, augmented as asked."""
    rng = random.Random(seed)
    ks = KnowledgeSet()
    for src in sources:
        if src.builtin == "phonetic":
            ks.extend(phonetic_knowledge(src.chars_from, max_chars=src.max_chars, augment=augment,
                                         scheme=src.scheme, seed=seed))
        elif src.triples is not None:
            facts = load_triples(src.triples)
            ks.extend(KnowledgeSet(subject_texts(facts, augment, rng), fact_qa(facts), facts))
        else:
            for text, qa, _where in load_documents(src.documents):
                ks.extend(KnowledgeSet(document_texts(text, augment, rng), qa))
    return ks
