"""Knowledge corpora (builtin:phonetic, triples, documents), augmentation, QA and knowledge scoring."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from lyrictool.errors import UserError
from lyrictool.knowledge import (
    Augmentation,
    Fact,
    KnowledgeSource,
    fact_qa,
    load_documents,
    load_triples,
    split_qa_by_subject,
    subject_texts,
)
from lyrictool.knowledge.build import build_knowledge
from lyrictool.knowledge.evaluate import normalize_answer, score_answers
from lyrictool.knowledge.phonetic import phonetic_knowledge

FACTS = [Fact("《星河》", "导演", "陈明"), Fact("《星河》", "主演", "李华"), Fact("《星河》", "类型", "科幻"),
         Fact("《雪山》", "导演", "王芳"), Fact("《雪山》", "主演", "赵强"), Fact("《雪山》", "类型", "喜剧")]


def test_phonetic_knowledge_states_readings_groups_and_asks_about_them(write_jsonl):
    songs = write_jsonl("songs.jsonl", [{"lyrics": "月光照在小村庄\n晚风吹过稻花香\n故乡"}])
    ks = phonetic_knowledge(str(songs), max_chars=50, augment=Augmentation(paraphrases=2))
    qa = {r["question"]: r["answer"] for r in ks.qa}
    assert qa["「光」押什么辙？"] == "江阳辙"
    assert qa["「光」的拼音是什么？"] == "guāng"
    assert qa["「光」的韵母是什么？"] == "uang"
    assert qa["「光」是第几声？"] == "第一声"
    assert qa["「风」押什么辙？"] == "中东辙"
    # every character's texts state its group; group lists name their characters
    assert any("「庄」" in t and "江阳辙" in t for t in ks.texts)
    assert any(t.startswith(("江阳辙的字", "押江阳辙的字", "这些字都押江阳辙")) and "光" in t for t in ks.texts)
    # line-final two-character words of the corpus appear as the group's common words
    assert any("常用词" in t or "的词：" in t for t in ks.texts if "江阳" in t)
    pair = [r for r in ks.qa if r["question"].endswith("押韵吗？")]
    assert pair and all(r["answer"].startswith(("押韵", "不押韵")) for r in pair)


def test_phonetic_knowledge_limits_characters_most_frequent_first(write_jsonl):
    songs = write_jsonl("songs.jsonl", [{"lyrics": "光光光光\n光明\n江水"}])
    ks = phonetic_knowledge(str(songs), max_chars=1, augment=Augmentation(paraphrases=1))
    assert {f.subject for f in ks.facts} == {"「光」"}


def test_paraphrase_augmentation_rewrites_each_subject_and_keeps_every_fact():
    texts = subject_texts(FACTS, Augmentation(paraphrases=4, permute=True), random.Random(0))
    assert len(texts) == 8
    star = [t for t in texts if t.count("《星河》") >= 3]
    assert len(star) == 4  # the subject is named in full in every sentence
    for t in star:
        assert all(o in t for o in ("陈明", "李华", "科幻")) and "王芳" not in t
    assert len(set(star)) > 1  # rewrites differ (templates and order)


def test_without_augmentation_every_subject_gets_one_fixed_text():
    aug = Augmentation(paraphrases=1, permute=False)
    a = subject_texts(FACTS, aug, random.Random(0))
    b = subject_texts(FACTS, aug, random.Random(99))
    assert a == b and len(a) == 2
    assert a[0] == "《星河》的导演是陈明。《星河》的主演是李华。《星河》的类型是科幻。"


def test_qa_rows_and_subject_split_keep_subjects_apart():
    qa = fact_qa(FACTS)
    assert qa[0] == {"question": "《星河》的导演是什么？", "answer": "陈明", "subject": "《星河》"}
    train, held = split_qa_by_subject(qa, 0.5, seed=1)
    assert len(train) == len(held) == 3
    assert {r["subject"] for r in train}.isdisjoint({r["subject"] for r in held})


def test_triples_file_to_knowledge(write_jsonl):
    path = write_jsonl("kb.jsonl", [{"subject": "《星河》", "relation": "导演", "object": "陈明"},
                                    {"subject": "《星河》", "relation": "上映年份", "object": 1987}])
    ks = build_knowledge([KnowledgeSource(triples=str(path))], Augmentation(paraphrases=3), seed=0)
    assert len(ks.texts) == 3 and all("陈明" in t and "1987" in t for t in ks.texts)
    assert [r["answer"] for r in ks.qa] == ["陈明", "1987"]


@pytest.mark.parametrize("row, reason", [
    ({"subject": "《星河》", "object": "陈明"}, "missing field 'relation'"),
    ({"subject": "《星河》", "relation": "导演", "object": ""}, "'object' is empty"),
    ({"subject": ["x"], "relation": "导演", "object": "陈明"}, "'subject' must be text"),
])
def test_bad_triple_rows_are_reported_with_path_and_line(write_jsonl, row, reason):
    path = write_jsonl("kb.jsonl", [{"subject": "a", "relation": "b", "object": "c"}, row])
    with pytest.raises(UserError) as e:
        load_triples(str(path))
    assert str(e.value).startswith(f"{path}:2: ") and reason in str(e.value)


def test_invalid_json_in_triples_is_reported_with_line(write_jsonl):
    path = write_jsonl("kb.jsonl", [{"subject": "a", "relation": "b", "object": "c"}], raw_lines=["{oops"])
    with pytest.raises(UserError, match=rf"^{path}:2: not valid JSON"):
        load_triples(str(path))


def test_documents_jsonl_with_qa_and_txt_paragraphs(write_jsonl, tmp_path):
    path = write_jsonl("docs.jsonl", [{"text": "甲是乙。丙是丁。戊是己。", "qa": [{"question": "甲是什么？", "answer": "乙"}]}])
    ks = build_knowledge([KnowledgeSource(documents=str(path))], Augmentation(paraphrases=3, permute=True), seed=0)
    assert ks.texts[0] == "甲是乙。丙是丁。戊是己。" and len(ks.texts) == 3
    assert all(sorted(t.split("。")) == sorted(ks.texts[0].split("。")) for t in ks.texts)  # same sentences
    assert ks.qa[0]["answer"] == "乙"
    txt = tmp_path / "notes.txt"
    txt.write_text("第一段。\n\n第二段。\n", encoding="utf-8")
    assert [d[0] for d in load_documents(str(txt))] == ["第一段。", "第二段。"]


def test_bad_document_qa_is_reported_with_path_and_line(write_jsonl):
    path = write_jsonl("docs.jsonl", [{"text": "甲是乙。", "qa": [{"question": "甲是什么？"}]}])
    with pytest.raises(UserError, match=rf"^{path}:1: qa\[0\]: expected"):
        load_documents(str(path))


def test_knowledge_source_forms(tmp_path):
    assert KnowledgeSource.model_validate("builtin:phonetic").builtin == "phonetic"
    with pytest.raises(ValidationError, match="exactly one"):
        KnowledgeSource.model_validate({"builtin": "phonetic", "triples": "x.jsonl"})
    with pytest.raises(ValidationError, match="file not found"):
        KnowledgeSource.model_validate({"triples": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ValidationError):
        KnowledgeSource.model_validate("builtin:films")


def test_score_answers_exact_and_contains():
    assert normalize_answer(" 江阳辙。") == "江阳辙"
    s = score_answers(["江阳辙。", "它押江阳辙", "中东辙", ""], ["江阳辙", "江阳辙", "江阳辙", "江阳辙"])
    assert s == {"n": 4, "exact_match": 0.25, "contains": 0.5}
    assert score_answers([], [])["n"] == 0
    with pytest.raises(ValueError):
        score_answers(["a"], [])
