"""ASGI middleware in front of the app: the API key, the body-size cap and the request metrics."""

from __future__ import annotations

import hmac
import time

from lyrictool.serve.errors import error_response
from lyrictool.serve.metrics import Metrics

ROUTES = ("/v1/lyrics", "/v1/chat/completions", "/v1/models", "/healthz", "/metrics")
OPEN_ROUTES = ("/healthz",)  # reachable without the API key (load balancers probe it)


def _not_utf8(body: bytes):
    """The 400 for a body that is not UTF-8 (JSON's one encoding, RFC 8259), instead of a generic parse error."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return error_response(400, f"request body is not UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start}); "
                                   "send the JSON encoded as UTF-8")
    return None


class Guard:
    """ASGI middleware: API key, body-size cap (read before the app sees it), request metrics."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: Metrics,
                 open_paths: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())):
        self.app = app
        self.api_key = api_key
        # The browser pages and the rating API (lyrictool.serve.pages): they load without the API key (the
        # playground then asks for it; /rate/api takes rater tokens instead).
        self.open_exact = OPEN_ROUTES + open_paths[0]
        self.open_prefixes = open_paths[1]
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "pages" if self._is_open_page(path) else "other"
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
                    response = error_response(413, f"request body exceeds this server's limit of {self.max_body} "
                                               "bytes (limits.max_body_bytes)", code="body_too_large")
                else:
                    response = _not_utf8(body)
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

    def _is_open(self, path: str) -> bool:
        """Reachable without the API key."""
        return path in self.open_exact or path.startswith(self.open_prefixes)

    def _is_open_page(self, path: str) -> bool:
        return path != "/healthz" and self._is_open(path)

    def _refuse(self, scope):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        if self.api_key and not self._is_open(path):
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                return error_response(401, "missing or wrong API key: send the header 'Authorization: Bearer "
                                       "<key>'", type="authentication_error", code="invalid_api_key",
                                       headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, "invalid Content-Length header")
            if int(length) > self.max_body:
                return error_response(413, f"request body of {length} bytes exceeds this server's limit of "
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
