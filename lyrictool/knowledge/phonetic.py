"""``builtin:phonetic``: what a model cannot hear, written down as text it can read.

For the characters of a lyrics corpus (most frequent first, line-final characters counted twice because the
rhyme lives there): each character's pinyin, final, tone and rhyme group, from pypinyin's default reading and
the rhyme tables; for each rhyme group its characters and the common two-character line endings of the
corpus.  Texts come in varied phrasings; QA pairs ask 「光」押什么辙？ -> 江阳辙, the pinyin, the final, the tone,
and whether two characters rhyme.
"""

from __future__ import annotations

import random
from collections import Counter

from lyrictool.knowledge import Augmentation, Fact, KnowledgeSet, fact_qa, subject_texts

TONE_NAMES = {1: "第一声", 2: "第二声", 3: "第三声", 4: "第四声", 5: "轻声"}

# Relation -> phrasings ({s} is 「字」); the first is the fixed one used without augmentation.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "拼音": ("{s}读{o}。", "{s}的拼音是{o}。", "{s}念作{o}。"),
    "韵母": ("{s}的韵母是{o}。", "{s}韵母为{o}。", "{s}的韵母：{o}。"),
    "声调": ("{s}是{o}。", "{s}读{o}。", "{s}的声调是{o}。"),
    "韵辙": ("{s}押{o}。", "{s}属于{o}。", "{s}在十三辙里归{o}。", "唱到{s}，押的是{o}。"),
}
QUESTIONS: dict[str, tuple[str, ...]] = {
    "拼音": ("{s}的拼音是什么？",),
    "韵母": ("{s}的韵母是什么？",),
    "声调": ("{s}是第几声？",),
    "韵辙": ("{s}押什么辙？",),
}
GROUP_TEMPLATES = ("{g}的字有：{chars}。", "押{g}的字：{chars}。", "这些字都押{g}：{chars}。")
WORD_TEMPLATES = ("{g}的常用词：{words}。", "押{g}的词：{words}。")


def corpus_chars(source: str, max_chars: int) -> tuple[list[str], dict[str, Counter]]:
    """The corpus's most frequent hanzi, and per rhyme group its most frequent two-character line endings."""
    from lyrictool.data import load_records
    from lyrictool.lyrics import parse, strip_hints
    from lyrictool.phonetics import engine

    counts: Counter = Counter()
    endings: Counter = Counter()
    for rec in load_records(source, what="knowledge.chars_from"):
        text = rec.data.get("lyrics")
        if not isinstance(text, str):
            continue
        for line in parse(strip_hints(text)).lines:
            han = [c for c in line if engine.char_sound(c)]
            counts.update(han)
            if han:
                counts[han[-1]] += 1
            if len(han) >= 2:
                endings["".join(han[-2:])] += 1
    chars = [c for c, _ in counts.most_common() if engine.char_sound(c)][:max_chars]
    return chars, endings


def phonetic_facts(chars: list[str], scheme: str = "shisanzhe") -> list[Fact]:
    from lyrictool.phonetics import char_sound, final_to_group

    facts = []
    for ch in chars:
        readings = char_sound(ch)
        if not readings:
            continue
        pinyin, final, tone = readings[0]
        group = final_to_group(final, scheme)
        s = f"「{ch}」"
        facts += [Fact(s, "拼音", pinyin), Fact(s, "韵母", final), Fact(s, "声调", TONE_NAMES.get(tone, str(tone)))]
        if group:
            facts.append(Fact(s, "韵辙", group + ("辙" if scheme == "shisanzhe" else "韵")))
    return facts


def phonetic_knowledge(chars_from: str = "builtin:demo-songs", *, max_chars: int = 300,
                       augment: Augmentation | None = None, scheme: str = "shisanzhe", seed: int = 0
                       ) -> KnowledgeSet:
    augment = augment or Augmentation()
    rng = random.Random(seed)
    chars, endings = corpus_chars(chars_from, max_chars)
    facts = phonetic_facts(chars, scheme)
    texts = subject_texts(facts, augment, rng, TEMPLATES)
    qa = fact_qa(facts, QUESTIONS)

    group_of = {f.subject[1]: f.object for f in facts if f.relation == "韵辙"}
    by_group: dict[str, list[str]] = {}
    for ch in chars:
        if ch in group_of:
            by_group.setdefault(group_of[ch], []).append(ch)
    for g, members in by_group.items():
        words = [w for w, _ in endings.most_common() if group_of.get(w[-1]) == g][:12]
        for k in range(augment.paraphrases):
            for i in range(0, len(members), 12):
                t = GROUP_TEMPLATES[(k + i) % len(GROUP_TEMPLATES)] if augment.paraphrases > 1 else GROUP_TEMPLATES[0]
                chunk = members[i:i + 12]
                if augment.permute and augment.paraphrases > 1:
                    chunk = rng.sample(chunk, len(chunk))
                texts.append(t.format(g=g, chars="、".join(chunk)))
            if words:
                t = WORD_TEMPLATES[k % len(WORD_TEMPLATES)] if augment.paraphrases > 1 else WORD_TEMPLATES[0]
                texts.append(t.format(g=g, words="、".join(words)))
    # Rhyme pairs: one "do these rhyme?" question per character, half of them rhyming.
    rhyming = [c for c in chars if c in group_of]
    for a in rhyming:
        same = [c for c in by_group[group_of[a]] if c != a]
        other = [c for c in rhyming if group_of[c] != group_of[a]]
        b = rng.choice(same) if same and (rng.random() < 0.5 or not other) else (rng.choice(other) if other else None)
        if b is None:
            continue
        answer = f"押韵，都押{group_of[a]}" if group_of[a] == group_of[b] else \
            f"不押韵，「{a}」押{group_of[a]}，「{b}」押{group_of[b]}"
        qa.append({"question": f"「{a}」和「{b}」押韵吗？", "answer": answer, "subject": f"「{a}」"})
    return KnowledgeSet(texts, qa, facts)
