"""The browser pages: the playground at ``/`` and blind MOS rating at ``/rate`` (both off unless the recipe says).

The pages are static package data (``lyrictool/serve/static/``: HTML, one script each plus a shared common.js, one stylesheet; no build
step, no CDN).  The server adds one JSON blob to each page (the rhyme groups to choose from, the caps, whether an
API key is needed), so the page needs no endpoint of its own: the playground talks to the public API only.

``/rate`` and ``/rate/api/*`` do not take the API key; they take a rater token (``Authorization: Bearer``), which
reaches that rater's own samples and answers and nothing else: not the API, not other raters' answers, not which
system wrote a sample (the study's un-blinding table is never read here).
"""

import json  # no `from __future__ import annotations`: FastAPI reads the route annotations
from importlib import resources

from lyrictool.serve.errors import ApiError, error_response

_STATIC = {  # the only files served under /static/ (no path from a request reaches the file system)
    "common.js": "text/javascript; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "rate.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The pages run only their own script and style, and send nothing anywhere but this server.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Example characters per 十三辙 group (docs/rhyme-schemes.md), shown next to each group in the playground.
SHISANZHE_EXAMPLES = {
    "发花": "花 家 沙", "梭波": "波 多 河", "乜斜": "月 谢 雪", "一七": "衣 知 雨", "姑苏": "路 苦 湖",
    "怀来": "来 海 怀", "灰堆": "飞 回 水", "由求": "舟 流 秋", "遥条": "高 桥 笑", "言前": "天 船 远",
    "人辰": "人 心 春", "江阳": "光 乡 窗", "中东": "风 星 红",
}


def open_paths(recipe) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(exact paths, path prefixes) the API-key check lets through: the pages themselves and the rating API."""
    exact: list[str] = []
    prefixes: list[str] = []
    if recipe.pages.playground or recipe.pages.rate:
        prefixes.append("/static/")
    if recipe.pages.playground:
        exact.append("/")
    if recipe.pages.rate:
        exact.append("/rate")
        prefixes.append("/rate/api/")
    return tuple(exact), tuple(prefixes)


def _read(name: str) -> str:
    return resources.files("lyrictool.serve").joinpath("static", name).read_text(encoding="utf-8")


def _page(name: str, config: dict):
    from starlette.responses import HTMLResponse

    blob = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")  # cannot close the <script> element
    html = _read(name).replace("{{CONFIG}}", blob)
    return HTMLResponse(html, headers=_HEADERS)


def pages_router(recipe, model_id: str, api_key_required: bool):
    """The APIRouter of the enabled pages (the app mounts it when ``recipe.pages`` enables one)."""
    from fastapi import APIRouter, Request
    from pydantic import BaseModel, Field, ValidationError
    from starlette.responses import Response

    from lyrictool.errors import UserError

    router = APIRouter()
    pages = recipe.pages

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in _STATIC:
            return error_response(404, f"no file /static/{name}")
        return Response(_read(name), media_type=_STATIC[name], headers=_HEADERS)

    if pages.playground:
        from lyrictool.lyrics import SECTION_NAMES
        from lyrictool.phonetics import group_names

        groups = group_names(recipe.scheme)
        playground_config = {
            "model": model_id, "api_key_required": api_key_required, "scheme": recipe.scheme,
            "groups": [{"name": g, "examples": SHISANZHE_EXAMPLES.get(g, "") if recipe.scheme == "shisanzhe" else ""}
                       for g in groups],
            "sections": list(SECTION_NAMES),
            "limits": {"max_tokens": recipe.limits.max_tokens, "default_max_tokens": recipe.limits.default_max_tokens,
                       "max_best_of": recipe.limits.max_best_of},
            "sampling": {"temperature": recipe.sampling.temperature, "top_p": recipe.sampling.top_p},
        }

        @router.get("/", include_in_schema=False)
        async def playground():
            return _page("playground.html", playground_config)

    if pages.rate:
        import asyncio

        from lyrictool.eval.study import Study, aspect_help

        study = None
        if pages.study:
            try:
                study = Study(pages.study)
            except UserError as e:
                raise UserError(f"pages.study: {e}") from None

        async def rater_of(request: Request) -> str:
            """The rater whose token the request carries; else an ApiError (the app answers it in OpenAI's shape)."""
            if study is None:
                raise ApiError(503, "this server has no MOS study (pages.study is not set)", type="server_error",
                               code="no_study")
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            rater = None
            if scheme.lower() == "bearer" and token.strip():
                rater = await asyncio.to_thread(study.rater_for_token, token.strip())
            if rater is None:
                raise ApiError(401, "open the rating page with the link you were given (it carries your rater "
                               "token)", type="authentication_error", code="invalid_rater_token",
                               headers={"WWW-Authenticate": "Bearer"})
            return rater

        rate_config = {"has_study": study is not None, "aspects": study.aspect_help() if study else aspect_help(),
                       "scale": list(study.scale) if study else [1, 5]}

        @router.get("/rate", include_in_schema=False)
        async def rate_page():
            return _page("rate.html", rate_config)

        @router.get("/rate/api/state", include_in_schema=False)
        async def rate_state(request: Request):
            rater = await rater_of(request)
            return {"rater": rater, **await asyncio.to_thread(study.progress, rater)}

        @router.get("/rate/api/samples/{n}", include_in_schema=False)
        async def rate_sample(n: int, request: Request):
            rater = await rater_of(request)
            sample = await asyncio.to_thread(study.sample, rater, n)
            if sample is None:
                return error_response(404, f"no sample {n}", param="n")
            return sample

        class Answer(BaseModel):
            aspect: str
            # strict: a JSON true, "3" or 3.0 is not a rating
            score: int = Field(..., strict=True, ge=study.scale[0] if study else 1, le=study.scale[1] if study else 5)

        @router.put("/rate/api/samples/{n}", include_in_schema=False)
        async def rate_answer(n: int, request: Request):
            rater = await rater_of(request)  # the token first: nothing about the body is told to a stranger
            try:
                answer = Answer.model_validate_json(await request.body())
            except ValidationError as e:
                first = e.errors()[0]
                field = ".".join(str(p) for p in first.get("loc", ())) or None
                return error_response(422, f"invalid answer: {first.get('msg', 'invalid')}", param=field)
            if answer.aspect not in study.all_aspects:
                return error_response(422, f"unknown aspect {answer.aspect!r}", param="aspect")
            if not await asyncio.to_thread(study.answer, rater, n, answer.aspect, answer.score):
                return error_response(404, f"no sample {n}", param="n")
            return {"saved": True, **await asyncio.to_thread(study.progress, rater)}

    return router
