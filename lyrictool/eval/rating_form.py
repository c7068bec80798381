"""What a rater rates, shared by the MOS sheets (:mod:`lyrictool.eval.mos`) and the browser studies
(:mod:`lyrictool.eval.study`): the aspects and their help text, the 1-5 scale (ITU-T P.800 absolute category
rating), the request text shown beside each song, and the blinding (a shuffled order behind item ids).

It imports neither of them, so the arrows point one way: ``mos`` (sheets, loading, statistics) reads studies, and
both build on this form.
"""

from __future__ import annotations

import hashlib
import json
import random

ASPECTS = ("language", "genre_relevance", "content", "singability", "overall")
ASPECT_HELP = {
    "language": "fluent, natural Chinese",
    "genre_relevance": "fits the requested genre and topic",
    "content": "meaningful, coherent, moving",
    "singability": "rhyme, rhythm and line lengths you could sing",
    "overall": "overall quality as lyrics",
}
SCALE = (1, 5)


def aspect_help() -> list[dict[str, str]]:
    """Each aspect with its help text, in order (what the rating page shows)."""
    return [{"name": a, "help": ASPECT_HELP[a]} for a in ASPECTS]


def request_text(controls: dict | None) -> str:
    """The request a song answered, on one line, as raters see it next to the lyrics."""
    from lyrictool.controls import build_prompt

    return build_prompt(controls or {}).replace("\n", "；")


def blind(items: list[dict], seed: int, prefix: str) -> tuple[str, list[tuple[str, dict]]]:
    """(sheet or study id, [(item id, item)] in shuffled order): the blinding a MOS sheet and a study share.

    The id is ``prefix`` + 6 hex digits of a hash of the seed and the songs; item ids are ``<id>-007``.
    """
    digest = hashlib.sha1(json.dumps([seed, [(i["system"], i["prompt_id"], i["lyrics"]) for i in items]],
                                     ensure_ascii=False).encode("utf-8")).hexdigest()
    blind_id = prefix + digest[:6]
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    width = max(3, len(str(len(items))))
    return blind_id, [(f"{blind_id}-{pos:0{width}d}", items[idx]) for pos, idx in enumerate(order, 1)]
