"""The real thing: `lyrictool serve` as a uvicorn process on a loopback port, driven by the official openai client,
on each backend: transformers (serve's own batcher) and vLLM (its continuous batching behind serve's admission;
the `vllm` marker, skipped where vLLM does not import; one engine start for the module)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serve_helpers import SERVE_RECIPES, free_port, start_serve, vllm_skip_reason

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-123"


MAX_QUEUE = 3


@pytest.fixture(scope="module", params=["transformers", pytest.param("vllm", marks=pytest.mark.vllm)])
def server(request, tmp_path_factory):
    backend = request.param
    if backend == "vllm" and (why := vllm_skip_reason()):
        pytest.skip(why)
    port = free_port()
    env = dict(os.environ)
    env.setdefault("LYRICTOOL_CACHE", str(tmp_path_factory.mktemp("cache")))
    log = tmp_path_factory.mktemp("log") / "serve.log"
    proc = start_serve([SERVE_RECIPES[backend], "--api-key", KEY, "--set", "limits.max_tokens=32",
                        "--set", "limits.default_max_tokens=16", "--set", f"batching.max_queue={MAX_QUEUE}"],
                       port, log, cwd=ROOT, env=env, timeout_s=300 if backend == "vllm" else 120)
    base = f"http://127.0.0.1:{port}"
    yield {"base": base, "proc": proc, "log": log, "backend": backend}
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def client(server, key=KEY):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=key, max_retries=0, timeout=60)


def test_openai_client_lists_the_model_and_completes(server):
    c = client(server)
    assert [m.id for m in c.models.list()] == ["lyrictool-tiny"]
    r = c.chat.completions.create(model="lyrictool-tiny", messages=[{"role": "user", "content": "写一首歌"}],
                                  max_tokens=12)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0


def test_openai_client_streams(server):
    c = client(server)
    stream = c.chat.completions.create(model="lyrictool-tiny", messages=[{"role": "user", "content": "写一首歌"}],
                                       max_tokens=16, stream=True, stream_options={"include_usage": True},
                                       extra_body={"controls": {"topic": "夏天", "rhyme": "江阳"}})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["lyrictool"]["expansion"]["topic"] == "夏天"
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    assert chunks[-1].usage.completion_tokens <= 16
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "〔" not in text and "<|" not in text


def test_best_of_n_returns_the_best_n_of_the_candidates_ranked(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"topic": "夏天", "rhyme": "江阳", "n": 2, "best_of": 4, "max_tokens": 24, "candidates": True}
    r = httpx.post(server["base"] + "/v1/lyrics", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert len(reply["choices"]) == 2 and len(reply["candidates"]) == 4
    scores = [c["score"] for c in reply["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert [c["score"] for c in reply["choices"]] == scores[:2]  # the best two of the four
    assert reply["usage"]["completion_tokens"] <= 4 * 24  # all four were generated, each within its limit
    for choice in reply["choices"]:
        assert choice["finish_reason"] in ("stop", "length") and "〔" not in choice["lyrics"]
        assert set(choice["controls_met"]) >= {"rhyme", "all"}


def test_a_stop_string_ends_generation_early(server):
    c = client(server)
    # greedy on the random tiny model: "你好" makes it repeat one character (other prompts: newlines)
    ask = {"model": "lyrictool-tiny", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 16,
           "temperature": 0.0}
    first = c.chat.completions.create(**ask)
    text = first.choices[0].message.content
    assert len(text) >= 4 and first.usage.completion_tokens == 16, text
    again = c.chat.completions.create(**ask, stop=[text[:2]])  # the same text, stopped at its start
    assert again.choices[0].finish_reason == "stop" and again.choices[0].message.content == ""
    assert again.usage.completion_tokens < 16  # the model was stopped, not run to max_tokens and cut


def test_concurrent_requests_are_served_together_and_over_max_queue_refused_with_retry_after(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"topic": "雨", "best_of": 4, "max_tokens": 32}

    def one(_):
        return httpx.post(server["base"] + "/v1/lyrics", json=body, headers=headers, timeout=120)

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(one, range(12)))
    codes = sorted(r.status_code for r in replies)
    assert set(codes) <= {200, 429}, [r.text for r in replies if r.status_code not in (200, 429)]
    assert codes.count(200) >= MAX_QUEUE  # at least a full queue's worth were served
    refused = [r for r in replies if r.status_code == 429]
    assert refused, "12 concurrent requests never exceeded max_queue 3: nothing was tested"
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
    health = httpx.get(server["base"] + "/healthz").json()
    assert health["status"] == "ok" and health["queue_depth"] == 0


def test_auth_errors_and_wrong_model_through_the_client(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client(server).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "lyrictool-tiny" in str(e.value)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client(server).chat.completions.create(model="lyrictool-tiny", max_tokens=10_000,
                                               messages=[{"role": "user", "content": "hi"}])
    assert "cap of 32" in str(e.value)
    r = httpx.post(server["base"] + "/v1/lyrics", json={"rhyme": "nope"},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 422 and "江阳" in r.json()["error"]["message"]


def test_list_form_content_is_text_parts_and_anything_else_is_a_clear_4xx(server):
    c = client(server)
    as_text = c.chat.completions.create(model="lyrictool-tiny", max_tokens=4,
                                        messages=[{"role": "user", "content": "写一首歌"}])
    as_parts = c.chat.completions.create(model="lyrictool-tiny", max_tokens=4, messages=[
        {"role": "user", "content": [{"type": "text", "text": "写一首"}, {"type": "text", "text": "歌"}]}])
    assert as_parts.usage.prompt_tokens == as_text.usage.prompt_tokens  # the parts are the same prompt
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="lyrictool-tiny", max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}])
    assert 400 <= e.value.status_code < 500
    message = e.value.body["message"]
    assert "messages.0.content" in message and "image_url" in message and "text parts" in message, message
    assert "(and" not in message  # one problem, not pydantic's list of failed union branches


def test_a_body_that_is_not_utf8_is_a_400_that_says_so(server):
    for route in ("/v1/lyrics", "/v1/chat/completions"):
        r = httpx.post(server["base"] + route, content='{"topic": "夏天"}'.encode("gbk"),
                       headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert "UTF-8" in r.json()["error"]["message"], r.text


def test_sigterm_lets_the_request_in_flight_finish(server):
    """Last in this module: it stops the server."""
    body, headers = {"topic": "雨", "best_of": 4, "max_tokens": 32}, {"Authorization": f"Bearer {KEY}"}
    took = []
    for _ in range(2):  # the first one also warms up; time the second
        start = time.monotonic()
        assert httpx.post(server["base"] + "/v1/lyrics", json=body, headers=headers, timeout=60).status_code == 200
        took.append(time.monotonic() - start)
    took = took[-1]  # one such request, on this machine now
    result = {}

    def slow_request():
        result["r"] = httpx.post(server["base"] + "/v1/lyrics", json=body, headers=headers, timeout=60)

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(took / 3)
    server["proc"].send_signal(signal.SIGTERM)
    running_at_signal = t.is_alive()  # no response yet when the signal was sent
    t.join(60)
    assert running_at_signal, f"the request ({took:.2f} s) finished before SIGTERM was sent: nothing was tested"
    # answered in full after the signal: it had reached the server before (a closed listener would refuse it)
    assert result["r"].status_code == 200, server["log"].read_text()
    assert len(result["r"].json()["choices"]) == 1
    assert server["proc"].wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled


@pytest.mark.parametrize("args,fragment", [
    ([], "give a serve recipe"),
    (["recipes/tiny/serve.yaml", "--set", "batching.max_batch_sise=2"], "did you mean max_batch_size"),
    (["recipes/tiny/serve.yaml", "--set", "limits.default_max_tokens=999"], "default_max_tokens (999) exceeds"),
    (["--model", "./no/such/run"], "no such model folder: ./no/such/run"),
])
def test_cli_user_errors_are_one_line_exit_2(args, fragment):
    r = subprocess.run([sys.executable, "-m", "lyrictool", "serve", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr
