"""The routes: health, Prometheus metrics, the model list, the lyrics endpoint and chat completions.

Each handler finds the :class:`~lyrictool.serve.service.LyricsService` on ``request.app.state.service``;
:func:`lyrictool.serve.app.create_app` registers them.
"""

from __future__ import annotations

import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from lyrictool.serve.errors import ApiError
from lyrictool.serve.schemas import (  # module level: FastAPI reads annotations
    ChatCompletionRequest,
    LyricsRequest,
)
from lyrictool.serve.service import LyricsService, finish_reason, usage
from lyrictool.serve.streaming import stream_chat


def _service(request: Request) -> LyricsService:
    return request.app.state.service


async def healthz(request: Request):
    service = _service(request)
    alive = service.queue.alive()
    body = {"status": "ok" if alive else "down", "model": service.model_id, "queue_depth": service.queue.depth()}
    return JSONResponse(body, status_code=200 if alive else 503)


async def prometheus(request: Request):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return PlainTextResponse(generate_latest(_service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def models(request: Request):
    service = _service(request)
    return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": service.created,
                                        "owned_by": "lyrictool"}]}


async def lyrics(req: LyricsRequest, request: Request):
    service = _service(request)
    limits = service.recipe.limits
    service.check_count(req.n, limits.max_n, "n", "max_n")
    best_of = req.best_of or req.n
    service.check_count(best_of, limits.max_best_of, "best_of", "max_best_of")
    if best_of < req.n:
        raise ApiError(422, f"best_of ({best_of}) must be at least n ({req.n})", param="best_of")
    max_tokens = service.token_limit(req.max_tokens)
    temperature, top_p = service.sampling(req.temperature, req.top_p)
    controls = req.controls()
    user_text, expansion = await service.controls_prompt(controls, req.expand)
    prompt = service.backend.chat_prompt([{"role": "user", "content": user_text}])
    prompt_tokens = service.check_prompt(prompt, max_tokens)
    outs, results = await service.generate(prompt, best_of, max_tokens, temperature, top_p)

    wanted = controls.to_dict()
    judged = await service.judge([out.text for out in outs], wanted)
    candidates = [{"lyrics": out.text, "finish_reason": finish_reason(out, result), **judgement}
                  for out, result, judgement in zip(outs, results, judged)]
    ranked = sorted(candidates, key=lambda c: c["score"], reverse=True) if best_of > req.n else candidates
    choices = [{"index": i, **cand} for i, cand in enumerate(ranked[:req.n])]
    body = {"id": f"lyr-{uuid.uuid4().hex[:24]}", "object": "lyrics", "created": int(time.time()),
            "model": service.model_id, "controls": wanted,
            "expansion": expansion.as_dict() if expansion else None, "best_of": best_of,
            "choices": choices, "usage": usage(prompt_tokens, results)}
    if req.candidates:  # every candidate, best first (the playground shows why the best one won)
        body["candidates"] = [{"index": i, **cand} for i, cand in enumerate(ranked)]
    return body


async def chat_completions(req: ChatCompletionRequest, request: Request):
    service = _service(request)
    if req.model != service.model_id:
        raise ApiError(404, f"model {req.model!r} does not exist here; this server serves {service.model_id!r} "
                       "(GET /v1/models)", param="model", code="model_not_found")
    service.check_count(req.n, service.recipe.limits.max_n, "n", "max_n")
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    max_tokens = service.token_limit(req.token_limit(), param)
    temperature, top_p = service.sampling(req.temperature, req.top_p)
    expansion = None
    if req.controls is not None:  # the lyrics template replaces the conversation (how the model was trained)
        user_text, expansion = await service.controls_prompt(req.controls, req.expand)
        messages = [{"role": "user", "content": user_text}]
    else:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
    prompt = service.backend.chat_prompt(messages)
    prompt_tokens = service.check_prompt(prompt, max_tokens)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    extension = {"expansion": expansion.as_dict()} if expansion else None

    if req.stream:
        return StreamingResponse(
            stream_chat(service, completion_id, created, prompt, prompt_tokens, req, max_tokens, temperature, top_p,
                        extension),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    outs, results = await service.generate(prompt, req.n, max_tokens, temperature, top_p, req.stop)
    body = {"id": completion_id, "object": "chat.completion", "created": created, "model": service.model_id,
            "choices": [{"index": i, "message": {"role": "assistant", "content": out.text},
                         "logprobs": None, "finish_reason": finish_reason(out, result)}
                        for i, (out, result) in enumerate(zip(outs, results))],
            "usage": usage(prompt_tokens, results)}
    if extension:
        body["lyrictool"] = extension
    return body


def register(app) -> None:
    app.get("/healthz")(healthz)
    app.get("/metrics")(prometheus)
    app.get("/v1/models")(models)
    app.post("/v1/lyrics")(lyrics)
    app.post("/v1/chat/completions")(chat_completions)
