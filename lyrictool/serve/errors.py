"""HTTP errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and one line per bad body."""

from __future__ import annotations

from lyrictool.errors import did_you_mean


class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def error_response(status: int, message: str, **kw):
    from starlette.responses import JSONResponse

    err = ApiError(status, message, **kw)
    return JSONResponse(err.body(), status_code=status, headers=err.headers)


def validation_message(exc) -> tuple[str, str | None]:
    """One readable line for the first problem in a request body (and how many more there are)."""
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
