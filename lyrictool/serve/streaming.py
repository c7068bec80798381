"""Server-sent events for ``stream: true``: OpenAI's chunk format, each finished lyric line as soon as it exists."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from lyrictool.serve.backends import GenRow
from lyrictool.serve.errors import ApiError
from lyrictool.serve.postprocess import LineAssembler
from lyrictool.serve.service import LyricsService, finish_reason, usage

log = logging.getLogger("lyrictool")


def stream_chat(service: LyricsService, completion_id: str, created: int, prompt: str, prompt_tokens: int, req,
                max_tokens: int, temperature: float, top_p: float, extension: dict | None):
    """Server-sent events in OpenAI's chunk format: each finished lyric line as soon as the model wrote it.

    Not a generator itself: the job is submitted here, before the response starts, so a full queue is still a
    429 and not a broken stream; the returned generator then relays the lines.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    outputs = [LineAssembler(req.stop) for _ in range(req.n)]

    def feeder(index: int, out: LineAssembler):
        def on_text(delta: str) -> bool:  # runs in the worker thread
            pieces, stopped = out.feed(delta)
            for piece in pieces:
                loop.call_soon_threadsafe(events.put_nowait, (index, piece))
            return stopped

        return on_text

    deadline = time.monotonic() + service.recipe.limits.request_timeout_s
    rows = [GenRow(prompt, max_tokens, on_text=feeder(i, out)) for i, out in enumerate(outputs)]
    future = service.submit(rows, temperature, top_p)
    done = asyncio.ensure_future(service.wait(future, deadline))
    done.add_done_callback(lambda _: events.put_nowait(None))

    def chunk(choices: list[dict], **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": service.model_id, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def gen():
        try:
            first = {"lyrictool": extension} if extension else {}
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                         for i in range(req.n)], **first)
            while True:
                item = await events.get()
                if item is None:
                    break
                index, piece = item
                yield chunk([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
            try:
                results = done.result()
            except Exception as e:  # noqa: BLE001 - the status line is sent already: report in-band
                if not isinstance(e, ApiError):
                    log.error("generation failed during a stream: %s: %s", type(e).__name__, e)
                    e = ApiError(500, f"internal error: {type(e).__name__}", type="server_error")
                yield f"data: {json.dumps(e.body(), ensure_ascii=False)}\n\n"
                return
            tails = [out.finish() for out in outputs]
            judged = [None] * len(outputs)
            if req.controls is not None:  # a lyrics request: its analysis travels with each choice's last chunk
                judged = await service.judge([out.text for out in outputs], req.controls.to_dict())
            for i, (out, result) in enumerate(zip(outputs, results)):
                if tails[i]:
                    yield chunk([{"index": i, "delta": {"content": tails[i]}, "finish_reason": None}])
                extra = {"lyrictool": {"analysis": {"index": i, "controls": req.controls.to_dict(), **judged[i]}}
                         } if judged[i] is not None else {}
                yield chunk([{"index": i, "delta": {}, "finish_reason": finish_reason(out, result)}], **extra)
            if req.stream_options is not None and req.stream_options.include_usage:
                yield chunk([], usage=usage(prompt_tokens, results))
            yield "data: [DONE]\n\n"
        finally:
            if not done.done():  # the client went away: do not generate for nobody if still queued
                future.cancel()
                done.cancel()

    return gen()
