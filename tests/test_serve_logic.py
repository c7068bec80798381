"""Serve building blocks without HTTP: post-processing, query expansion, the batching queue."""

from __future__ import annotations

import threading
import time

import pytest
from serve_helpers import ScriptedBackend

from lyrictool.serve.backends import GenRow
from lyrictool.serve.batching import BatchQueue, Job, QueueClosed, QueueFull
from lyrictool.serve.expansion import expand_by_rules, is_thin, parse_model_imagery
from lyrictool.serve.postprocess import LineAssembler, analyze, clean_lyrics


# ---- post-processing -----------------------------------------------------------------------------------------
def test_clean_lyrics_strips_hints_and_normalises_tags_and_punctuation():
    raw = "【主歌】\n月光洒满了〔江阳〕窗,\n\n\n风吹过〔江阳〕墙。\n副歌：\n我们一起〔江阳〕唱!!\n[???]\n"
    assert clean_lyrics(raw) == "[Verse]\n月光洒满了窗\n风吹过墙\n\n[Chorus]\n我们一起唱！"


def test_streamed_lines_equal_the_whole_text_for_any_split():
    raw = "[Verse]\n天〔言前〕边,\n海〔言前〕岸\n[Chorus]\n回〔由求〕头"
    whole = clean_lyrics(raw)
    for size in (1, 2, 3, 7):
        asm = LineAssembler()
        pieces = []
        for i in range(0, len(raw), size):
            pieces += asm.feed(raw[i:i + size])[0]
        pieces.append(asm.finish())
        assert "".join(pieces) == whole == asm.text
        assert "〔" not in asm.text


def test_stop_string_cuts_the_text_even_when_split_across_pieces():
    asm = LineAssembler(stop=["END"])
    asm.feed("第一行\n第二E")
    _, stopped = asm.feed("ND之后的字")
    assert stopped and asm.stopped
    asm.finish()
    assert asm.text == "第一行\n第二"


def test_analysis_reports_groups_and_controls_met():
    text = "[Verse]\n月亮照在大江上\n风吹麦浪好风光\n[Chorus]\n一起唱\n回故乡"
    wanted = {"rhyme": "江阳", "structure": [{"section": "verse", "lines": 2}, {"section": "chorus", "lines": 2}]}
    a = analyze(text, wanted)
    assert [line["rhyme_group"] for line in a["lines"]] == ["江阳"] * 4
    assert a["lines"][0]["section"] == "verse" and a["lines"][0]["final"] == "ang"
    assert a["controls_met"] == {"rhyme": True, "structure": True, "format": True, "all": True}
    wrong = analyze("[Verse]\n天上的星星\n地上的人", wanted)
    assert wrong["controls_met"]["rhyme"] is False and wrong["controls_met"]["all"] is False


# ---- query expansion -----------------------------------------------------------------------------------------
def test_thin_topics_expand_from_the_table():
    e = expand_by_rules("夏天")
    assert e is not None and e.source == "rules" and "蝉鸣" in e.imagery and len(e.imagery) == 6
    assert e.expanded_topic.startswith("夏天（意象：")
    both = expand_by_rules("夏天的海", max_items=4)
    assert {"蝉鸣", "浪花"} <= set(both.imagery)  # both keys contribute before the cap
    assert expand_by_rules("量子力学") is None
    assert is_thin("夏天") and not is_thin("一个关于夏天、海边和初恋的长故事")


def test_model_imagery_is_kept_only_when_it_looks_like_a_list():
    e = parse_model_imagery("蝉鸣、西瓜，hello、晚风。这是一个太长太长太长的句子", "夏天")
    assert e.imagery == ["蝉鸣", "西瓜", "晚风"] and e.source == "model"
    assert parse_model_imagery("asdf qwer", "夏天") is None


# ---- batching ------------------------------------------------------------------------------------------------
def _job(text_rows: int = 1, temperature: float = 0.8, max_tokens: int = 8) -> Job:
    return Job(rows=[GenRow("p", max_tokens) for _ in range(text_rows)], temperature=temperature, top_p=0.95)


def test_waiting_jobs_share_one_generate_call_up_to_max_batch_size():
    backend = ScriptedBackend(["甲乙"])
    q = BatchQueue(backend, max_batch_size=8, max_wait_ms=50, max_queue=64)
    futures = [q.submit(_job(2)) for _ in range(4)] + [q.submit(_job(1))]  # 9 sequences waiting
    q.start()
    assert all(f.result(5)[0].raw == "甲乙" for f in futures)
    assert backend.batches == [8, 1]  # a job's samples are never split across batches
    assert q.close(5)


def test_a_job_arriving_within_max_wait_joins_the_batch():
    backend = ScriptedBackend(["甲"])
    q = BatchQueue(backend, max_batch_size=8, max_wait_ms=300, max_queue=64)
    q.start()
    first = q.submit(_job())
    time.sleep(0.05)
    second = q.submit(_job())
    first.result(5), second.result(5)
    assert backend.batches == [2]
    q.close(5)


def test_batch_size_one_runs_jobs_one_by_one_and_settings_never_mix():
    backend = ScriptedBackend(["甲"])
    q = BatchQueue(backend, max_batch_size=1, max_wait_ms=10, max_queue=64)
    futures = [q.submit(_job()) for _ in range(3)]
    q.start()
    [f.result(5) for f in futures]
    assert backend.batches == [1, 1, 1]
    q.close(5)

    backend = ScriptedBackend(["甲"])
    q = BatchQueue(backend, max_batch_size=16, max_wait_ms=50, max_queue=64)
    futures = [q.submit(_job(temperature=t)) for t in (0.0, 0.8, 0.0, 0.8)]
    q.start()
    [f.result(5) for f in futures]
    assert backend.batches == [2, 2] and backend.temperatures == [0.0, 0.8]
    q.close(5)


def test_full_queue_refuses_with_retry_after_and_cancelled_jobs_are_skipped():
    gate = threading.Event()
    backend = ScriptedBackend(["甲"], gate=gate)
    q = BatchQueue(backend, max_batch_size=1, max_wait_ms=0, max_queue=2)
    q.start()
    running = q.submit(_job())
    time.sleep(0.1)  # the worker holds it at the gate
    waiting = [q.submit(_job()), q.submit(_job())]
    with pytest.raises(QueueFull) as full:
        q.submit(_job())
    assert full.value.retry_after >= 1
    assert waiting[0].cancel()  # the caller gave up while queued
    gate.set()
    running.result(5)
    waiting[1].result(5)
    assert backend.batches == [1, 1]  # the cancelled job never reached the model
    q.close(5)


def test_close_finishes_accepted_jobs_and_refuses_new_ones():
    backend = ScriptedBackend(["甲"], delay_s=0.2)
    q = BatchQueue(backend, max_batch_size=1, max_wait_ms=0, max_queue=8)
    q.start()
    futures = [q.submit(_job()) for _ in range(3)]
    assert q.close(10)
    assert all(f.done() and f.result()[0].raw == "甲" for f in futures)
    with pytest.raises(QueueClosed):
        q.submit(_job())


def test_a_failing_batch_fails_its_requests_and_the_worker_lives_on():
    class Flaky(ScriptedBackend):
        def generate(self, rows, *, temperature, top_p):
            if temperature == 1.5:
                raise RuntimeError("boom")
            return super().generate(rows, temperature=temperature, top_p=top_p)

    q = BatchQueue(Flaky(["甲"]), max_batch_size=4, max_wait_ms=0, max_queue=8)
    q.start()
    bad = q.submit(_job(temperature=1.5))
    with pytest.raises(RuntimeError):
        bad.result(5)
    assert q.submit(_job()).result(5)[0].raw == "甲"
    q.close(5)


def test_served_model_id():
    from lyrictool.recipes import ModelSpec
    from lyrictool.serve.config import ServeRecipe

    assert ServeRecipe().model_id() == "lyrictool-tiny"
    assert ServeRecipe(model=ModelSpec(name="runs/sft-tiny/")).model_id() == "sft-tiny"
    assert ServeRecipe(served_model_name="lyrics-v2").model_id() == "lyrics-v2"
