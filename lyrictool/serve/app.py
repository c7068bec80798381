"""The HTTP app: OpenAI-compatible chat completions, the lyrics endpoint, health and Prometheus metrics.

Request path: guard (API key, body size, metrics) -> validate and normalise the controls -> query expansion
-> one prompt template -> the batching queue -> post-processing (hints stripped, tags and punctuation
normalised) -> analysis, controls check, best-of ranking.  Errors use OpenAI's body,
``{"error": {"message", "type", "param", "code"}}``; every limit answers with a 4xx that names the limit.
No request can name a file or another model: the only model is the one loaded at start.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

from lyrictool.errors import UserError
from lyrictool.serve.backends import Backend, GenResult, GenRow
from lyrictool.serve.batching import BatchQueue, Job, QueueClosed, QueueFull
from lyrictool.serve.config import ServeRecipe
from lyrictool.serve.postprocess import LineAssembler
from lyrictool.serve.schemas import (  # module level: FastAPI reads annotations
    ChatCompletionRequest,
    LyricsRequest,
)

log = logging.getLogger("lyrictool")

ROUTES = ("/v1/lyrics", "/v1/chat/completions", "/v1/models", "/healthz", "/metrics")
OPEN_ROUTES = ("/healthz",)  # reachable without the API key (load balancers probe it)


class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _error_response(status: int, message: str, **kw):
    from starlette.responses import JSONResponse

    err = ApiError(status, message, **kw)
    return JSONResponse(err.body(), status_code=status, headers=err.headers)


# ---- metrics (a registry per app: tests build many apps in one process) ------------------------------------------
class Metrics:
    def __init__(self, queue_depth):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lyrictool_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lyrictool_request_latency_seconds", "Request latency by route.", ["route"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queue_depth = Gauge("lyrictool_queue_depth", "Requests waiting for the model.", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        self.tokens = Counter("lyrictool_generated_tokens", "Tokens generated.", registry=self.registry)
        self.batch_size = Histogram("lyrictool_batch_sequences", "Sequences per generate call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.batch_seconds = Histogram("lyrictool_batch_seconds", "Seconds per generate call.",
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32), registry=self.registry)

    def on_batch(self, sequences: int, seconds: float) -> None:
        self.batch_size.observe(sequences)
        self.batch_seconds.observe(seconds)


class Guard:
    """ASGI middleware: API key, body-size cap (read before the app sees it), request metrics."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: Metrics):
        self.app = app
        self.api_key = api_key
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        start = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            response = self._refuse(scope)
            if response is None:
                body, too_big = await self._read_body(scope, receive)
                if too_big:
                    response = _error_response(413, f"request body exceeds this server's limit of {self.max_body} "
                                               "bytes (limits.max_body_bytes)", code="body_too_large")
            if response is not None:
                await response(scope, receive, send_status)
                return

            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect message

            await self.app(scope, replay, send_status)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refuse(self, scope):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key and scope["path"] not in OPEN_ROUTES:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                return _error_response(401, "missing or wrong API key: send the header 'Authorization: Bearer "
                                       "<key>'", type="authentication_error", code="invalid_api_key",
                                       headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error_response(400, "invalid Content-Length header")
            if int(length) > self.max_body:
                return _error_response(413, f"request body of {length} bytes exceeds this server's limit of "
                                       f"{self.max_body} bytes (limits.max_body_bytes)", code="body_too_large")
        return None

    async def _read_body(self, scope, receive) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False


# ---- the app --------------------------------------------------------------------------------------------------
class LyricsService:
    """Everything a request needs besides HTTP: the recipe's limits, the backend, the queue, the rewards."""

    def __init__(self, recipe: ServeRecipe, backend: Backend, metrics: Metrics):
        self.recipe = recipe
        self.backend = backend
        self.metrics = metrics
        self.model_id = recipe.model_id()
        self.created = int(time.time())
        b = recipe.batching
        self.queue = BatchQueue(backend, max_batch_size=b.max_batch_size, max_wait_ms=b.max_wait_ms,
                                max_queue=b.max_queue, on_batch=metrics.on_batch)
        from lyrictool.recipes import recipe_source
        from lyrictool.rewards import Rewards, check_reward_specs

        check_reward_specs(recipe.rewards, where=recipe_source(recipe))
        self.rewards = Rewards(list(recipe.rewards), scheme=recipe.scheme)  # loads a scorer model, if listed

    # ---- checks -----------------------------------------------------------------------------------------------
    def token_limit(self, requested: int | None, param: str = "max_tokens") -> int:
        cap = self.recipe.limits.max_tokens
        if requested is None:
            return self.recipe.limits.default_max_tokens
        if requested > cap:
            raise ApiError(422, f"{param} {requested} exceeds this server's cap of {cap} (limits.max_tokens)",
                           param=param, code="max_tokens_too_large")
        return requested

    def check_count(self, value: int, cap: int, param: str, key: str) -> None:
        if value > cap:
            raise ApiError(422, f"{param} {value} exceeds this server's cap of {cap} (limits.{key})", param=param,
                           code=f"{param}_too_large")

    def check_prompt(self, prompt: str, max_tokens: int) -> int:
        tokens = self.backend.count_tokens(prompt)
        cap = self.recipe.limits.max_prompt_tokens
        if tokens > cap:
            raise ApiError(422, f"the prompt has {tokens} tokens; this server accepts at most {cap} "
                           "(limits.max_prompt_tokens)", param="messages", code="prompt_too_long")
        if tokens + max_tokens > self.backend.max_context:
            raise ApiError(422, f"prompt ({tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's context "
                           f"of {self.backend.max_context} tokens; ask for fewer tokens", param="max_tokens",
                           code="context_length_exceeded")
        return tokens

    def sampling(self, temperature: float | None, top_p: float | None) -> tuple[float, float]:
        s = self.recipe.sampling
        return (s.temperature if temperature is None else temperature, s.top_p if top_p is None else top_p)

    # ---- generation -------------------------------------------------------------------------------------------
    def submit(self, rows: list[GenRow], temperature: float, top_p: float):
        try:
            return self.queue.submit(Job(rows=rows, temperature=temperature, top_p=top_p))
        except QueueFull as e:
            raise ApiError(429, f"the server is at capacity ({self.queue.max_queue} requests waiting); retry after "
                           f"{e.retry_after}s", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except QueueClosed:
            raise ApiError(503, "the server is shutting down; retry on another instance", type="server_error",
                           code="shutting_down", headers={"Retry-After": "1"}) from None

    async def wait(self, future, deadline: float) -> list[GenResult]:
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            future.cancel()  # still queued: the worker skips it
            raise ApiError(504, f"generation did not finish within {self.recipe.limits.request_timeout_s:g}s "
                           "(limits.request_timeout_s); retry with fewer max_tokens or later", type="server_error",
                           code="timeout") from None
        self.metrics.tokens.inc(sum(r.new_tokens for r in results))
        return results

    async def generate(self, prompt: str, k: int, max_tokens: int, temperature: float, top_p: float,
                       stop: list[str] | None = None) -> tuple[list[LineAssembler], list[GenResult]]:
        """k samples for one prompt, post-processed."""
        deadline = time.monotonic() + self.recipe.limits.request_timeout_s
        outputs = [LineAssembler(stop) for _ in range(k)]
        rows = [GenRow(prompt, max_tokens, on_text=_feeder(out)) for out in outputs]
        results = await self.wait(self.submit(rows, temperature, top_p), deadline)
        for out in outputs:
            out.finish()
        return outputs, results

    async def expand(self, controls, expand: bool | None):
        """The expansion of a thin topic (rules and/or the model, as the recipe says), or None."""
        from lyrictool.serve.expansion import expand_by_rules, expansion_prompt, is_thin, parse_model_imagery

        spec = self.recipe.expansion
        if expand is False or spec.mode == "off" or not is_thin(controls.topic, spec.thin_max_chars):
            return None
        found = None
        if spec.mode in ("rules", "rules+model"):
            found = expand_by_rules(controls.topic, spec.max_items)
        if found is None and spec.mode in ("model", "rules+model"):
            prompt = self.backend.chat_prompt([{"role": "user",
                                                "content": expansion_prompt(controls.topic, spec.max_items)}])
            outs, _ = await self.generate(prompt, 1, 64, 0.7, 0.95)
            found = parse_model_imagery(outs[0].raw, controls.topic, spec.max_items)
        return found

    async def controls_prompt(self, controls, expand: bool | None):
        from lyrictool.controls import build_prompt

        expansion = await self.expand(controls, expand)
        prompted = controls.model_copy(update={"topic": expansion.expanded_topic}) if expansion else controls
        return build_prompt(prompted), expansion


def _feeder(out: LineAssembler):
    def on_text(delta: str) -> bool:
        return out.feed(delta)[1]

    return on_text


def _usage(prompt_tokens: int, results: list[GenResult]) -> dict:
    completion = sum(r.new_tokens for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _finish_reason(out: LineAssembler, result: GenResult) -> str:
    return "stop" if out.stopped or result.finish_reason == "stop" else "length"


def create_app(recipe: ServeRecipe, backend: Backend, api_key: str | None = None):
    """The FastAPI app serving ``backend`` under ``recipe``'s limits (the queue starts with the app's lifespan)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    metrics = Metrics(lambda: service.queue.depth())  # late-bound: service exists before the first scrape
    service = LyricsService(recipe, backend, metrics)

    @asynccontextmanager
    async def lifespan(app):
        service.queue.start()
        log.info("serving %s (max_batch_size=%d, max_wait_ms=%g, max_queue=%d)", service.model_id,
                 recipe.batching.max_batch_size, recipe.batching.max_wait_ms, recipe.batching.max_queue)
        yield
        # uvicorn has stopped accepting connections and waited for open requests; finish what is queued.
        await asyncio.to_thread(service.queue.close, recipe.limits.shutdown_timeout_s)

    app = FastAPI(title="lyrictool", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(ApiError(422, message, param=param).body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.url.path}; see /v1/models, /v1/chat/completions, /v1/lyrics",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                          str(exc.detail))
        return JSONResponse(ApiError(exc.status_code, message).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
                            status_code=500)

    @app.get("/healthz")
    async def healthz():
        alive = service.queue.alive()
        body = {"status": "ok" if alive else "down", "model": service.model_id, "queue_depth": service.queue.depth()}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": service.created,
                                            "owned_by": "lyrictool"}]}

    @app.post("/v1/lyrics")
    async def lyrics(req: LyricsRequest):
        from lyrictool.serve.postprocess import analyze

        limits = recipe.limits
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
        texts = [out.text for out in outs]
        scored = await asyncio.to_thread(service.rewards.score, [wanted] * len(texts), texts)
        candidates = []
        for out, result, reward in zip(outs, results, scored):
            analysis = await asyncio.to_thread(analyze, out.text, wanted, recipe.scheme)
            candidates.append({"lyrics": out.text, "finish_reason": _finish_reason(out, result),
                               "score": round(reward.total, 6), "rewards": reward.as_dict()["rewards"], **analysis})
        ranked = sorted(candidates, key=lambda c: c["score"], reverse=True) if best_of > req.n else candidates
        choices = [{"index": i, **cand} for i, cand in enumerate(ranked[:req.n])]
        return {"id": f"lyr-{uuid.uuid4().hex[:24]}", "object": "lyrics", "created": int(time.time()),
                "model": service.model_id, "controls": wanted,
                "expansion": expansion.as_dict() if expansion else None, "best_of": best_of,
                "choices": choices, "usage": _usage(prompt_tokens, results)}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest):
        if req.model != service.model_id:
            raise ApiError(404, f"model {req.model!r} does not exist here; this server serves {service.model_id!r} "
                           "(GET /v1/models)", param="model", code="model_not_found")
        service.check_count(req.n, recipe.limits.max_n, "n", "max_n")
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
                _stream(service, completion_id, created, prompt, prompt_tokens, req, max_tokens, temperature, top_p,
                        extension),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        outs, results = await service.generate(prompt, req.n, max_tokens, temperature, top_p, req.stop)
        body = {"id": completion_id, "object": "chat.completion", "created": created, "model": service.model_id,
                "choices": [{"index": i, "message": {"role": "assistant", "content": out.text},
                             "logprobs": None, "finish_reason": _finish_reason(out, result)}
                            for i, (out, result) in enumerate(zip(outs, results))],
                "usage": _usage(prompt_tokens, results)}
        if extension:
            body["lyrictool"] = extension
        return body

    return Guard(app, api_key=api_key or None, max_body_bytes=recipe.limits.max_body_bytes, metrics=metrics)


def _stream(service: LyricsService, completion_id: str, created: int, prompt: str, prompt_tokens: int, req,
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
            for i, (out, result) in enumerate(zip(outputs, results)):
                tail = out.finish()
                if tail:
                    yield chunk([{"index": i, "delta": {"content": tail}, "finish_reason": None}])
                yield chunk([{"index": i, "delta": {}, "finish_reason": _finish_reason(out, result)}])
            if req.stream_options is not None and req.stream_options.include_usage:
                yield chunk([], usage=_usage(prompt_tokens, results))
            yield "data: [DONE]\n\n"
        finally:
            if not done.done():  # the client went away: do not generate for nobody if still queued
                future.cancel()
                done.cancel()

    return gen()


def _validation_message(exc) -> tuple[str, str | None]:
    """One readable line for the first problem in a request body (and how many more there are)."""
    from lyrictool.errors import did_you_mean

    errors = exc.errors()
    e = errors[0]
    loc = [p for p in e["loc"] if p != "body"]
    param = ".".join(str(p) for p in loc) or None
    kind = e["type"]
    if kind == "json_invalid":
        param = None
        msg = f"request body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})"
    elif not loc and isinstance(e.get("input"), (bytes, str)):
        msg = "request body must be a JSON object sent with Content-Type: application/json"
    elif kind == "extra_forbidden":
        from lyrictool.serve.schemas import LyricsRequest

        msg = f"unknown field {param!r}{did_you_mean(str(loc[-1]), list(LyricsRequest.model_fields))}"
    elif kind == "missing":
        msg = f"{param}: required field is missing"
    elif kind == "model_attributes_type" or (kind.endswith("_type") and not loc):
        msg = "request body must be a JSON object"
    else:
        text = e["msg"].removeprefix("Value error, ")
        msg = f"{param}: {text}" if param else text
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return msg, param


def run_serve(recipe: ServeRecipe | None, model: str | None = None, host: str | None = None, port: int | None = None,
              api_key: str | None = None) -> None:
    """`lyrictool serve`: load the model, then serve until Ctrl-C / SIGTERM (in-flight requests finish)."""
    import importlib.util

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"serve needs {module}: pip install 'lyrictool[serve]'")
    from lyrictool.recipes import ModelSpec

    if recipe is None:
        if not model:
            raise UserError("give a serve recipe (e.g. recipes/tiny/serve.yaml) or --model PATH")
        recipe = ServeRecipe(model=ModelSpec(name=model))
    elif model:
        recipe.model = recipe.model.model_copy(update={"name": model})
    if host:
        recipe.host = host
    if port is not None:
        recipe.port = port
    if recipe.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("binding %s without --api-key: anyone who can reach this address can use the model",
                    recipe.host)
    import uvicorn

    from lyrictool.serve.backends import load_backend

    if recipe.seed is not None:
        import torch

        torch.manual_seed(recipe.seed)
    backend = load_backend(recipe)
    app = create_app(recipe, backend, api_key)
    log.info("lyrictool serve: http://%s:%d/v1 (model id %s%s)", recipe.host, recipe.port, recipe.model_id(),
             ", API key required" if api_key else "")
    uvicorn.run(app, host=recipe.host, port=recipe.port, log_level="warning",
                timeout_graceful_shutdown=int(recipe.limits.shutdown_timeout_s) or None)
