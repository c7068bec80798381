"""Serve building blocks without HTTP: post-processing, query expansion, the batching queue, the engine queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from serve_helpers import ScriptedBackend

from lyrictool.serve.backends import GenRow
from lyrictool.serve.batching import BatchQueue, EngineQueue, Job, QueueClosed, QueueFull
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


# ---- the engine queue (vLLM: continuous batching in the engine, admission and proxy here) --------------------
class FakeEngine:
    """An async engine in the shape of VLLMBackend: each sample its own request, one character a step."""

    continuous = True
    max_context = 4096

    def __init__(self, text: str = "甲乙丙丁", step_s: float = 0.01):
        self.text, self.step_s = text, step_s
        self.running = 0          # requests in the engine now
        self.most = 0             # most at once
        self.aborted = 0

    def healthy(self) -> bool:
        return True

    async def stream(self, row, *, temperature, top_p):
        from lyrictool.serve.backends import GenResult

        self.running += 1
        self.most = max(self.most, self.running)
        written = ""
        try:
            for ch in self.text[:row.max_tokens]:
                await asyncio.sleep(self.step_s)
                written += ch
                if row.on_text is not None and row.on_text(ch):
                    return GenResult(written, len(written), "stop")
            return GenResult(written, len(written), "length" if len(self.text) > row.max_tokens else "stop")
        except asyncio.CancelledError:
            self.aborted += 1
            raise
        finally:
            self.running -= 1


def test_engine_queue_hands_every_sample_to_the_engine_at_once_and_caps_admission():
    async def main():
        engine = FakeEngine()
        q = EngineQueue(engine, max_batch_size=16, max_queue=3)
        q.start()
        jobs = [q.submit(_job(2)) for _ in range(3)]
        assert q.depth() == 3
        with pytest.raises(QueueFull) as full:
            q.submit(_job())
        assert full.value.retry_after >= 1
        results = await asyncio.gather(*jobs)
        assert [len(r) for r in results] == [2, 2, 2] and results[0][0].raw == "甲乙丙丁"
        assert engine.most == 6  # no batch boundary: all six samples were in the engine together
        assert q.depth() == 0 and q.alive()
        q.submit(_job())  # room again
        assert await q.drain(5)

    asyncio.run(main())


def test_engine_queue_cancel_aborts_the_engine_requests_and_drain_refuses_new_work():
    async def main():
        engine = FakeEngine(text="甲" * 100, step_s=0.01)
        q = EngineQueue(engine, max_batch_size=16, max_queue=8)
        q.start()
        gone = q.submit(_job(3, max_tokens=100))
        kept = q.submit(_job(1, max_tokens=5))
        await asyncio.sleep(0.05)
        gone.cancel()  # the client went away (or its timeout passed)
        assert (await kept)[0].raw == "甲" * 5
        await asyncio.sleep(0.02)
        assert engine.aborted == 3 and engine.running == 0
        slow = q.submit(_job(1, max_tokens=20))
        assert await q.drain(5)  # lets the request in the engine finish
        assert slow.done() and slow.result()[0].raw == "甲" * 20
        assert not q.alive()
        with pytest.raises(QueueClosed):
            q.submit(_job())

    asyncio.run(main())


def test_engine_queue_stop_request_from_the_caller_ends_the_sample():
    async def main():
        q = EngineQueue(FakeEngine(), max_batch_size=4, max_queue=4)
        q.start()
        rows = [GenRow("p", 10, on_text=lambda ch: ch == "丙")]
        (result,) = await q.submit(Job(rows=rows, temperature=0.8, top_p=0.95))
        assert result.raw == "甲乙丙" and result.finish_reason == "stop"

    asyncio.run(main())


def test_served_model_id():
    from lyrictool.recipes import ModelSpec
    from lyrictool.serve.config import ServeRecipe

    assert ServeRecipe().model_id() == "lyrictool-tiny"
    assert ServeRecipe(model=ModelSpec(name="runs/sft-tiny/")).model_id() == "sft-tiny"
    assert ServeRecipe(served_model_name="lyrics-v2").model_id() == "lyrics-v2"
