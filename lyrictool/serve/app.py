"""The HTTP app: the service, its lifespan (the batching queue), error handlers, the routes, behind the guard.

Request path: guard (API key, body size, metrics; ``middleware.py``) -> validate and normalise the controls ->
query expansion -> one prompt template -> the batching queue -> post-processing (hints stripped, tags and
punctuation normalised) -> analysis, controls check, best-of ranking (``routes.py``, ``service.py``).  Errors use
OpenAI's body (``errors.py``); every limit answers with a 4xx that names the limit.  No request can name a file
or another model: the only model is the one loaded at start.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from lyrictool.serve.backends import Backend
from lyrictool.serve.config import ServeRecipe
from lyrictool.serve.errors import ApiError, validation_message
from lyrictool.serve.metrics import Metrics
from lyrictool.serve.middleware import Guard
from lyrictool.serve.service import LyricsService

log = logging.getLogger("lyrictool")


def create_app(recipe: ServeRecipe, backend: Backend, api_key: str | None = None):
    """The FastAPI app serving ``backend`` under ``recipe``'s limits (the queue starts with the app's lifespan)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from lyrictool.serve import routes

    metrics = Metrics(lambda: service.queue.depth())  # late-bound: service exists before the first scrape
    service = LyricsService(recipe, backend, metrics)

    @asynccontextmanager
    async def lifespan(app):
        service.queue.start()
        b = recipe.batching
        log.info("serving %s on %s (max_batch_size=%d, max_wait_ms=%g, max_queue=%d)", service.model_id,
                 recipe.sampling.backend, b.max_batch_size, b.max_wait_ms, b.max_queue)
        yield
        # uvicorn has stopped accepting connections and waited for open requests; finish what is queued.
        await service.queue.drain(recipe.limits.shutdown_timeout_s)

    app = FastAPI(title="lyrictool", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc)
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

    routes.register(app)
    from lyrictool.serve.pages import open_paths, pages_router

    if recipe.pages.playground or recipe.pages.rate:
        app.include_router(pages_router(recipe, service.model_id, api_key_required=bool(api_key)))
    return Guard(app, api_key=api_key or None, max_body_bytes=recipe.limits.max_body_bytes, metrics=metrics,
                 open_paths=open_paths(recipe))
