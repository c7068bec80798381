"""The controls a user can ask for, and how they become prompt text.

Controls (all optional): ``genre``, ``topic``, ``title`` (a tune name / 词牌 or song title), ``rhyme``
(a rhyme-group name such as "江阳", or a final such as "ang"), ``scheme`` (one letter per line, "X" = free;
sections separated by "|", or one short pattern such as "AABB" for every section),
``structure`` (ordered sections with line counts) and ``line_lengths`` (characters per line).

:func:`build_prompt` is the one prompt template: training, rejection sampling, eval and serve all use it, so a
model is always asked the same way it was taught.  The model's own chat template is applied by TRL /
the tokenizer, not here.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lyrictool.errors import UserError

SECTION_LABELS_ZH = {
    "intro": "前奏段",
    "verse": "主歌",
    "pre-chorus": "导歌",
    "chorus": "副歌",
    "bridge": "桥段",
    "outro": "尾声",
    "rap": "说唱段",
    "interlude": "间奏段",
}
SCHEME_RE = re.compile(r"^[A-Z]+(\|[A-Z]+)*$")


class SectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    section: str = Field(..., description="Canonical section name: verse, chorus, bridge, pre-chorus, outro ...")
    lines: int = Field(..., gt=0, le=64, description="Number of lyric lines in this section.")

    @field_validator("section")
    @classmethod
    def _canonical(cls, v: str) -> str:
        from lyrictool.lyrics import canonical_section

        name = canonical_section(v) or canonical_section(f"[{v}]")
        if name is None:
            raise ValueError(f"unknown section {v!r}; use one of {', '.join(SECTION_LABELS_ZH)}")
        return name


class Controls(BaseModel):
    """What the user asks for.  Every field is optional; validation also checks they agree with each other."""

    model_config = ConfigDict(extra="forbid")

    genre: str | None = Field(None, max_length=40, description="Genre, e.g. 民谣, 摇滚, 古风.")
    topic: str | None = Field(None, max_length=200, description="Topic or theme, e.g. 夏天.")
    title: str | None = Field(None, max_length=80, description="Song title or tune name (词牌).")
    rhyme: str | None = Field(None, description="Rhyme group (e.g. 江阳) or final (e.g. ang).")
    scheme: str | None = Field(None, description="Rhyme scheme, one letter per line, X = free (e.g. AABB); "
                               "sections separated by | (AABB|ABAB), or one pattern for every section.")
    structure: list[SectionSpec] | None = Field(None, description="Sections in order with their line counts.")
    line_lengths: list[int] | None = Field(None, description="Characters (sung syllables) per line.")

    @field_validator("genre", "topic", "title")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    @field_validator("rhyme")
    @classmethod
    def _rhyme_known(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from lyrictool.phonetics import group_names, normalize_rhyme

        group = normalize_rhyme(v.strip())
        if group is None:
            raise ValueError(f"unknown rhyme {v!r}; use a 十三辙 group ({' '.join(group_names())}) or a final "
                             "such as ang")
        return group

    @field_validator("scheme")
    @classmethod
    def _scheme_letters(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.replace(" ", "").replace("/", "|").upper()
        if not v:
            return None
        if not SCHEME_RE.match(v) or len(v) > 256:
            raise ValueError(f"scheme {v!r}: one capital letter per line, X for a free line, sections separated "
                             "by |, e.g. AABB, XAXA or AABB|ABAB")
        return v

    @field_validator("line_lengths")
    @classmethod
    def _lengths(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return None
        if not v or len(v) > 256 or any(n < 1 or n > 64 for n in v):
            raise ValueError("line_lengths: 1 to 256 lines of 1 to 64 characters each")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Controls:
        counts = {}
        if self.structure:
            counts["structure"] = sum(s.lines for s in self.structure)
        if self.line_lengths:
            counts["line_lengths"] = len(self.line_lengths)
        if self.scheme and "|" in self.scheme:
            counts["scheme"] = len(self.scheme.replace("|", ""))
            parts = [len(p) for p in self.scheme.split("|")]
            if self.structure and parts != [s.lines for s in self.structure]:
                raise ValueError(f"contradictory controls: scheme has sections of {parts} lines, structure "
                                 f"{[s.lines for s in self.structure]}")
        elif self.scheme:
            # one pattern: for the whole song, or repeated over each section (AABB for every quatrain)
            n = len(self.scheme)
            other = next(iter(counts.values()), None)
            per_section = self.structure and all(s.lines % n == 0 for s in self.structure)
            if other is not None and other != n and not per_section and (self.structure or other % n):
                counts["scheme"] = n
        if len(set(counts.values())) > 1:
            said = ", ".join(f"{k} has {n} lines" for k, n in counts.items())
            raise ValueError(f"contradictory controls: {said}")
        return self

    @property
    def n_lines(self) -> int | None:
        if self.structure:
            return sum(s.lines for s in self.structure)
        if self.line_lengths:
            return len(self.line_lengths)
        if self.scheme:
            return len(self.scheme.replace("|", ""))
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict without unset fields (the form metrics and data rows use)."""
        return self.model_dump(exclude_none=True)


def controls_dict(controls: Any) -> dict[str, Any]:
    """Controls in any form as a plain dict without unset keys (the form metrics and rewards read).

    A :class:`Controls`, a mapping (datasets columns of dicts fill absent keys with None: dropped), a JSON string
    (how TRL datasets carry them), or None.  Anything unreadable is no controls: scoring never fails on them.
    """
    if controls is None:
        return {}
    if hasattr(controls, "model_dump"):
        controls = controls.model_dump(exclude_none=True)
    elif isinstance(controls, str):
        import json

        try:
            controls = json.loads(controls) if controls.strip() else {}
        except json.JSONDecodeError:
            return {}
    return {k: v for k, v in controls.items() if v is not None} if isinstance(controls, dict) else {}


def prompt_messages(prompt: Any, where: str | None = None) -> list[dict]:
    """The user turn(s) of a prompt given as chat messages, as text, or as controls (through the one template).

    With ``where`` (a data row's ``path:line``) messages and text are checked and a bad one is a UserError naming
    it; without, unreadable controls count as none (a scorer at inference never fails on them).
    """
    if isinstance(prompt, (list, str)):
        if where is not None and not (prompt.strip() if isinstance(prompt, str) else prompt and all(
                isinstance(m, dict) and "content" in m for m in prompt)):
            raise UserError("'prompt' must be text or a list of chat messages", where=where)
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return build_messages(controls_dict(prompt) or None)["prompt"]


def parse_controls(value: Any, where: str = "controls") -> Controls:
    """Validate a controls mapping; errors name `where` (a row's path:line or a request field)."""
    if value is None:
        return Controls()
    if isinstance(value, Controls):
        return value
    if not isinstance(value, dict):
        raise UserError(f"controls must be a mapping, got {type(value).__name__}", where=where)
    try:
        return Controls.model_validate(value)
    except ValidationError as e:
        raise UserError(format_controls_error(e, value), where=where) from None


def format_controls_error(e: ValidationError, value: dict | None = None) -> str:
    from lyrictool.errors import did_you_mean

    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"controls.{loc}: unknown control{did_you_mean(str(err['loc'][-1]), list(Controls.model_fields))}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"controls.{loc}: {msg}" if loc else f"controls: {msg}"


def derive_controls(lyrics: str, wanted: list[str] | tuple[str, ...], scheme: str = "shisanzhe") -> dict[str, Any]:
    """Controls read off the lyrics themselves: structure, line lengths, dominant rhyme group, rhyme scheme.

    The rhyme group is derived only when at least half of the lines end in it (otherwise the song has no
    dominant rhyme and asking for one would teach the model a false instruction).
    """
    from lyrictool.lyrics import parse
    from lyrictool.phonetics import groups_pattern, line_groups, main_group, syllable_count

    doc = parse(lyrics)
    out: dict[str, Any] = {}
    lines = doc.lines
    if not lines:
        return out
    if "structure" in wanted:
        structure = []
        for sec in doc.sections:
            if sec.lines:
                structure.append({"section": sec.name or "verse", "lines": len(sec.lines)})
        out["structure"] = structure
    if "line_lengths" in wanted:
        lengths = [syllable_count(line) for line in lines]
        if all(1 <= n <= 64 for n in lengths):
            out["line_lengths"] = lengths
    if "rhyme" in wanted or "scheme" in wanted:
        groups = line_groups(lines, scheme)
        if "rhyme" in wanted and scheme == "shisanzhe":
            found = main_group(groups)  # ties: the later line's group
            if found is not None and found[1] * 2 >= len(lines):
                out["rhyme"] = found[0]
        if "scheme" in wanted:
            out["scheme"] = "".join(groups_pattern(groups, scheme))
    return out


def build_prompt(controls: Controls | dict | None) -> str:
    """The user turn for a lyrics request, in readable Chinese.  One template for the whole product."""
    c = controls if isinstance(controls, Controls) else Controls.model_validate(controls or {})
    parts = ["请写一首中文歌词。"]
    if c.genre:
        parts.append(f"风格：{c.genre}")
    if c.title:
        parts.append(f"标题：{c.title}")
    if c.topic:
        parts.append(f"主题：{c.topic}")
    if c.rhyme:
        parts.append(f"押韵：{c.rhyme}辙")
    if c.scheme:
        parts.append(f"韵式：{c.scheme}")
    if c.structure:
        secs = "，".join(f"{SECTION_LABELS_ZH.get(s.section, s.section)}{s.lines}行" for s in c.structure)
        parts.append(f"结构：{secs}")
    if c.line_lengths:
        parts.append("每行字数：" + "、".join(str(n) for n in c.line_lengths))
    return "\n".join(parts)


def build_messages(controls: Controls | dict | None, lyrics: str | None = None) -> dict[str, list[dict]]:
    """Conversational prompt/completion row as TRL's SFTTrainer takes it (completion-only loss)."""
    row = {"prompt": [{"role": "user", "content": build_prompt(controls)}]}
    if lyrics is not None:
        row["completion"] = [{"role": "assistant", "content": lyrics}]
    return row
