"""The HTTP app in-process (FastAPI TestClient): endpoints, validation, limits, auth, streaming, metrics."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from serve_helpers import ScriptedBackend

from lyrictool.serve.app import create_app
from lyrictool.serve.config import ServeRecipe

SONG = "[Verse]\n月亮照在大〔江阳〕江上\n风吹麦浪好风〔江阳〕光\n[Chorus]\n我们一起〔江阳〕唱,\n回到故〔江阳〕乡"
CLEAN = "[Verse]\n月亮照在大江上\n风吹麦浪好风光\n\n[Chorus]\n我们一起唱\n回到故乡"
MODEL = "lyrictool-tiny"


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    import os

    import torch

    from lyrictool.recipes import ModelSpec
    from lyrictool.serve.backends import TransformersBackend

    os.environ.setdefault("LYRICTOOL_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recipes/tiny/serve.yaml does (cpu_threads: 1)
    yield TransformersBackend.load(ModelSpec())
    torch.set_num_threads(threads)


def make_client(backend=None, api_key=None, **recipe):
    recipe = ServeRecipe.model_validate({"served_model_name": MODEL, **recipe})
    app = create_app(recipe, backend or ScriptedBackend([SONG]), api_key=api_key)
    return TestClient(app, raise_server_exceptions=False)


def chat(client, **body):
    return client.post("/v1/chat/completions",
                       json={"model": MODEL, "messages": [{"role": "user", "content": "写一首歌"}], **body})


def sse_events(text: str) -> list:
    lines = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_lyrics_endpoint_returns_clean_lyrics_with_analysis_and_controls_met():
    backend = ScriptedBackend([SONG])
    with make_client(backend) as client:
        r = client.post("/v1/lyrics", json={"topic": "思念", "rhyme": "ang", "genre": "民谣",
                                            "structure": [{"section": "主歌", "lines": 2}, {"section": "chorus", "lines": 2}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["controls"]["rhyme"] == "江阳"  # normalised from the final "ang"
    assert body["controls"]["structure"][0]["section"] == "verse"
    choice = body["choices"][0]
    assert choice["lyrics"] == CLEAN  # hints stripped, tags and punctuation normalised
    assert [line["rhyme_group"] for line in choice["lines"]] == ["江阳"] * 4
    assert choice["controls_met"] == {"rhyme": True, "structure": True, "format": True, "all": True}
    assert choice["metrics"]["rhyme_accuracy"] == 1.0
    assert body["usage"]["completion_tokens"] == len(SONG) + 1
    assert "主题：思念（意象：" in backend.prompts[0]  # the expanded topic reached the prompt template
    assert body["expansion"]["source"] == "rules" and "旧照片" in body["expansion"]["imagery"]


def test_expansion_can_be_switched_off_per_request_and_by_the_recipe():
    backend = ScriptedBackend([SONG])
    with make_client(backend) as client:
        body = client.post("/v1/lyrics", json={"topic": "夏天", "expand": False}).json()
    assert body["expansion"] is None and "主题：夏天<assistant>" in backend.prompts[0]
    with make_client(ScriptedBackend([SONG]), expansion={"mode": "off"}) as client:
        assert client.post("/v1/lyrics", json={"topic": "夏天"}).json()["expansion"] is None


def test_model_expansion_asks_the_model_for_imagery():
    backend = ScriptedBackend(["萤火虫、汽水、晚风", SONG])
    with make_client(backend, expansion={"mode": "model"}) as client:
        body = client.post("/v1/lyrics", json={"topic": "夏夜"}).json()
    assert body["expansion"] == {"topic": "夏夜", "imagery": ["萤火虫", "汽水", "晚风"], "source": "model",
                                 "expanded_topic": "夏夜（意象：萤火虫、汽水、晚风）"}
    assert "夏夜（意象：萤火虫、汽水、晚风）" in backend.prompts[1]


def test_best_of_returns_the_candidate_that_meets_the_controls():
    off = "[Verse]\n天上的星星\n地上的人们\n[Chorus]\n一闪一闪\n亮晶晶"
    backend = ScriptedBackend([off, off, SONG, off])
    with make_client(backend) as client:
        body = client.post("/v1/lyrics", json={"rhyme": "江阳", "best_of": 4}).json()
    assert backend.batches == [4]  # the candidates were generated in one batch
    assert len(body["choices"]) == 1 and body["choices"][0]["lyrics"] == CLEAN
    assert body["best_of"] == 4
    assert body["choices"][0]["rewards"] == {"rhyme": 1.0, "structure": 1.0, "line_length": 1.0, "format": 1.0}


def test_best_of_ranks_by_the_recipes_rewards_including_the_safety_override(tmp_path):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# test terms\n故乡\n", encoding="utf-8")
    safe = "[Verse]\n天上的星星\n地上的人们"
    backend = ScriptedBackend([SONG, safe])  # SONG rhymes as asked but contains a blocked term
    rewards = [{"name": "rhyme"}, {"name": "safety", "path": str(blocklist), "override_below": 0.5}]
    with make_client(backend, rewards=rewards) as client:
        body = client.post("/v1/lyrics", json={"rhyme": "江阳", "best_of": 2}).json()
    assert body["choices"][0]["lyrics"] == safe
    assert body["choices"][0]["rewards"]["safety"] == 1.0


@pytest.mark.parametrize("payload,fragment", [
    ({"rhyme": "xyz"}, "use a 十三辙 group (发花 梭波"),
    ({"rhym": "江阳"}, "unknown field 'rhym'; did you mean rhyme?"),
    ({"scheme": "AABB", "line_lengths": [5, 5, 5]}, "contradictory controls"),
    ({"structure": [{"section": "solo-guitar-x", "lines": 2}]}, "unknown section"),
    ({"n": 2, "best_of": 1}, "best_of (1) must be at least n (2)"),
    ({"temperature": -1}, "temperature"),
    ({"stream": True}, "stream from /v1/chat/completions"),
])
def test_invalid_controls_are_422_with_a_clear_message(payload, fragment):
    with make_client() as client:
        r = client.post("/v1/lyrics", json=payload)
    assert r.status_code == 422
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize("payload,status,fragment", [
    ({"max_tokens": 100_000}, 422, "max_tokens 100000 exceeds this server's cap of 64"),
    ({"max_completion_tokens": 65}, 422, "max_completion_tokens 65 exceeds"),
    ({"n": 3}, 422, "n 3 exceeds this server's cap of 2"),
    ({"model": "../../etc/passwd"}, 404, "does not exist here; this server serves 'lyrictool-tiny'"),
    ({"messages": [{"role": "user", "content": "长" * 300}]}, 422, "this server accepts at most 200"),
    ({"messages": []}, 422, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 422, "messages.0.role"),
])
def test_chat_limits(payload, status, fragment):
    with make_client(limits={"max_tokens": 64, "default_max_tokens": 32, "max_n": 2,
                             "max_prompt_tokens": 200}) as client:
        r = chat(client, **payload)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


def test_body_size_cap_is_413_and_malformed_json_is_422():
    with make_client(limits={"max_body_bytes": 2048}) as client:
        big = client.post("/v1/chat/completions", content=b"{" + b" " * 5000 + b"}",
                          headers={"content-type": "application/json"})
        assert big.status_code == 413 and "2048 bytes" in big.json()["error"]["message"]
        chunked = client.post("/v1/chat/completions", content=iter([b"{" + b" " * 1500] * 3),  # no Content-Length
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        bad = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
        assert bad.status_code == 422 and "not valid JSON" in bad.json()["error"]["message"]
        assert client.post("/v1/lyrics", json=[1, 2]).status_code == 422


def test_api_key_is_required_everywhere_but_healthz():
    with make_client(api_key="s3cret") as client:
        assert client.get("/healthz").status_code == 200
        for bad in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = client.get("/v1/models", headers=bad)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics").status_code == 401
        ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == MODEL


def test_chat_completion_streaming_equals_non_streaming_and_comes_line_by_line():
    with make_client() as client:
        plain = chat(client).json()
        assert plain["choices"][0]["message"]["content"] == CLEAN
        assert plain["choices"][0]["finish_reason"] == "stop"
        r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:] if e["choices"]
              and e["choices"][0]["delta"].get("content")]
    assert len(pieces) == 6 and "".join(pieces) == CLEAN  # 4 lines + 2 tags, each its own chunk
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["usage"]["completion_tokens"] == len(SONG) + 1 and events[-1]["choices"] == []


def test_streaming_several_choices_keeps_each_on_its_index():
    other = "[Verse]\n天上的星〔中东〕星\n地上的人们"
    with make_client(ScriptedBackend([SONG, other])) as client:
        r = chat(client, stream=True, n=2)
    text = {0: "", 1: ""}
    finished = {}
    for event in sse_events(r.text):
        for choice in event["choices"]:
            text[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finished[choice["index"]] = choice["finish_reason"]
    assert text == {0: CLEAN, 1: "[Verse]\n天上的星星\n地上的人们"}
    assert finished == {0: "stop", 1: "stop"}


def test_stop_strings_and_controls_in_chat():
    backend = ScriptedBackend([SONG])
    with make_client(backend) as client:
        r = chat(client, stop=["[Chorus]"], controls={"topic": "春天", "rhyme": "江阳"})
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "[Verse]\n月亮照在大江上\n风吹麦浪好风光"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["lyrictool"]["expansion"]["topic"] == "春天"
    assert "押韵：江阳辙" in backend.prompts[0] and "写一首歌" not in backend.prompts[0]


def test_full_queue_answers_429_with_retry_after():
    gate = threading.Event()
    backend = ScriptedBackend([SONG], gate=gate)
    with make_client(backend, batching={"max_batch_size": 1, "max_wait_ms": 0, "max_queue": 1}) as client, \
            ThreadPoolExecutor(4) as pool:
        busy = pool.submit(chat, client)  # taken by the worker, held at the gate
        time.sleep(0.3)
        queued = pool.submit(chat, client)  # fills the queue
        time.sleep(0.3)
        refused = chat(client)
        gate.set()
        assert busy.result().status_code == 200 and queued.result().status_code == 200
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"


def test_slow_generation_times_out_with_504_and_the_server_stays_healthy():
    backend = ScriptedBackend([SONG], delay_s=1.5)
    with make_client(backend, limits={"request_timeout_s": 0.3}) as client:
        r = chat(client)
        assert r.status_code == 504 and "request_timeout_s" in r.json()["error"]["message"]
        assert client.get("/healthz").json()["status"] == "ok"


def test_a_stream_that_times_out_ends_with_an_error_event():
    backend = ScriptedBackend([SONG], delay_s=1.5)
    with make_client(backend, limits={"request_timeout_s": 0.3}) as client:
        r = chat(client, stream=True)
    assert r.status_code == 200  # the status line went out before the timeout
    last = [line for line in r.text.split("\n\n") if line.startswith("data: ")][-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "timeout"


def test_metrics_count_requests_tokens_and_batches():
    with make_client() as client:
        chat(client)
        chat(client, model="nope")
        text = client.get("/metrics").text
    assert 'lyrictool_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'lyrictool_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
    assert f"lyrictool_generated_tokens_total {float(len(SONG) + 1)}" in text
    assert "lyrictool_queue_depth 0.0" in text
    assert "lyrictool_batch_sequences_count 1.0" in text
    assert 'lyrictool_request_latency_seconds_count{route="/v1/chat/completions"} 2.0' in text


def test_shutdown_finishes_the_requests_in_flight():
    backend = ScriptedBackend([SONG], delay_s=0.5)
    client = make_client(backend, batching={"max_batch_size": 1, "max_wait_ms": 0})
    with client, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(chat, client) for _ in range(3)]
        time.sleep(0.2)
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200, 200, 200]
    service = client.app.app.state.service
    assert not service.queue.alive()
    r = chat(client)  # after shutdown: refused, not hung
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"


def test_real_tiny_model_in_process(tiny_backend):
    with make_client(tiny_backend, limits={"max_tokens": 24, "default_max_tokens": 24}) as client:
        r = client.post("/v1/lyrics", json={"topic": "夏天", "rhyme": "江阳", "n": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["choices"]) == 2 and body["usage"]["completion_tokens"] <= 48
        for choice in body["choices"]:
            assert "〔" not in choice["lyrics"] and choice["finish_reason"] in ("stop", "length")
        assert body["usage"]["prompt_tokens"] > 10


def test_counting_prompt_tokens_during_generation_never_corrupts_the_batch(tiny_backend):
    """Regression: request threads and the worker once shared one fast tokenizer, whose padding state is global."""
    from lyrictool.serve.backends import GenRow

    prompts = [tiny_backend.chat_prompt([{"role": "user", "content": "写" * k}]) for k in (1, 40, 5, 80)]
    stop = threading.Event()

    def count_in_a_loop():
        while not stop.is_set():
            tiny_backend.count_tokens("请写一首中文歌词。")

    counter = threading.Thread(target=count_in_a_loop)
    counter.start()
    try:
        for _ in range(30):
            results = tiny_backend.generate([GenRow(p, 2) for p in prompts], temperature=0.8, top_p=0.95)
            assert len(results) == 4
    finally:
        stop.set()
        counter.join()
