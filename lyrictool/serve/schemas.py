"""Request bodies of the HTTP API.

``/v1/lyrics`` is ours: unknown fields are errors (a misspelt control must not be silently ignored).
``/v1/chat/completions`` follows OpenAI's schema: OpenAI-style tools send fields we do not use (``user``,
``presence_penalty`` ...), which are accepted and ignored; ``controls`` and ``expand`` are our extensions (the
``openai`` client sends them with ``extra_body``).  Caps that depend on the recipe (max_tokens, n, best_of) are
checked by the app, which knows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lyrictool.controls import Controls


class SamplingFields(BaseModel):
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, description="New tokens per lyric, at most the server's cap.")


class LyricsRequest(Controls, SamplingFields):
    """POST /v1/lyrics: the controls (all optional) plus how many lyrics and how to sample them."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(1, ge=1, description="Lyrics returned.")
    best_of: int | None = Field(None, ge=1, description="Candidates generated and ranked; the best n are "
                                "returned (default n).")
    expand: bool | None = Field(None, description="Expand a thin topic into imagery (default: the server's mode).")
    candidates: bool = Field(False, description="Also return every candidate generated, best first, each with its "
                             "score, rewards and analysis (`candidates`).")
    stream: bool = Field(False, description="Not supported here; use /v1/chat/completions to stream.")

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool) -> bool:
        if v:
            raise ValueError("/v1/lyrics answers in one piece; stream from /v1/chat/completions with "
                             "{\"controls\": {...}, \"stream\": true}")
        return v

    def controls(self) -> Controls:
        return Controls.model_validate(self.model_dump(include=set(Controls.model_fields)))


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, v):
        # OpenAI's list form: only text parts mean anything to a lyrics model; say so instead of listing
        # pydantic's failed union branches
        if isinstance(v, list):
            for i, part in enumerate(v):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise ValueError(f"part {i} is {kind!r}; this server reads only text parts "
                                     '({"type": "text", "text": "..."}) or a plain string')
                if not isinstance(part.get("text"), str):
                    raise ValueError(f'part {i} is a text part without a "text" string')  # noqa: TRY004 - pydantic wants ValueError
        elif v is not None and not isinstance(v, str):
            raise ValueError(f"must be a string or a list of text parts, got {type(v).__name__}")
        return v

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions (OpenAI schema, plus ``controls`` and ``expand``)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(..., min_length=1)
    n: int = Field(1, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    controls: Controls | None = Field(None, description="Lyrics controls: the prompt becomes the lyrics template.")
    expand: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4 or any(len(s) > 64 for s in stops):
            raise ValueError("at most 4 stop strings of up to 64 characters")
        return [s for s in stops if s]

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
