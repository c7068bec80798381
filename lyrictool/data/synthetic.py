"""In-house ratings and preference rows, made from good songs and systematically damaged copies.

The scorer (``lyrictool score``), DPO and the demo need rated lyrics, and we have no raters.  So we
take the bundled demo songs (written by us, every line rhyming in its declared group) as the good
examples and derive bad ones by damaging them in one known way each.  Because we know exactly what
each damage breaks, we know which aspect a careful rater would mark down:

=================  ========  =====  =======  =============================================
damage             language  genre  content  what it does
=================  ========  =====  =======  =============================================
(original)         5         5      5        the song as written
broken_rhyme       2         4      4        half the lines end in another group's word
wrong_structure    4         2      4        section tags removed, merged, or a section dropped
repetition         2         4      2        one line looped 5 to 8 times in place of a section
off_topic          3         2      2        later sections replaced by a song of another genre and topic
truncated          4         4      2        the song stops after its first few lines
=================  ========  =====  =======  =============================================

Language covers sound and fluency (rhyme, loops), genre covers fitting the requested kind of song
(its form and its style), content covers saying something complete about the requested topic.
Every row's prompt is the song's controls plus the structure read off the original, so the rows of
one song share one prompt and pairs can be built within it.

Sampling prompts (``prompts.jsonl``, ``builtin:demo-prompts``) are control requests no song answers: each
takes the shape of one song (its structure and line lengths, which the model has learned to write), the genre
and topic of another, and a rhyme group other than the shape song's, cycling through all 13 groups.  Rejection
sampling (and RL) draw on them: the model's best candidates for requests it has no gold song for.

Regenerate the committed files (they are tested to equal a fresh run)::

    python -m lyrictool.data.synthetic            # writes lyrictool/data/demo/{ratings,preferences,prompts}.jsonl
    python -m lyrictool.data.synthetic --check    # exit 1 if the committed files are stale
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from lyrictool.data import DEMO_DIR, iter_records, write_or_check
from lyrictool.errors import UserError

DAMAGES = ("broken_rhyme", "wrong_structure", "repetition", "off_topic", "truncated")

ASPECTS = ("language", "genre", "content")
ORIGINAL_RATINGS = {"language": 5, "genre": 5, "content": 5}
#: The rating rule: what a rater gives a copy with exactly this damage (see the module docstring).
DAMAGE_RATINGS = {
    "broken_rhyme": {"language": 2, "genre": 4, "content": 4},
    "wrong_structure": {"language": 4, "genre": 2, "content": 4},
    "repetition": {"language": 2, "genre": 4, "content": 2},
    "off_topic": {"language": 3, "genre": 2, "content": 2},
    "truncated": {"language": 4, "genre": 4, "content": 2},
}
#: The aspect(s) each damage is meant to lower (the lowest ratings above).
HURTS = {kind: tuple(a for a, v in r.items() if v == min(r.values())) for kind, r in DAMAGE_RATINGS.items()}

SONGS_PATH = DEMO_DIR / "songs.jsonl"
RATINGS_PATH = DEMO_DIR / "ratings.jsonl"
PREFERENCES_PATH = DEMO_DIR / "preferences.jsonl"
PROMPTS_PATH = DEMO_DIR / "prompts.jsonl"


# --- reading songs ---------------------------------------------------------------------------------

def load_songs(path: str | Path = SONGS_PATH) -> list[dict]:
    """Song rows ``{"id", "title", "lyrics", "controls"}``; a malformed row is ``path:line: reason``."""
    songs = []
    for rec in iter_records(str(path)):
        d = rec.data
        for key, kind in (("id", str), ("lyrics", str), ("controls", dict)):
            if not isinstance(d.get(key), kind):
                raise UserError(f"song rows need {key!r} ({kind.__name__}); fields present: {', '.join(d)}",
                                where=rec.where)
        songs.append(d)
    if not songs:
        raise UserError(f"{path} has no songs")
    return songs


def _sections(text: str) -> list[tuple[str | None, list[str]]]:
    from lyrictool.lyrics import parse

    return [(s.tag, list(s.lines)) for s in parse(text).sections if s.lines]


def _render(sections: list[tuple[str | None, list[str]]]) -> str:
    blocks = ["\n".join(([tag] if tag else []) + lines) for tag, lines in sections if lines]
    return "\n\n".join(blocks)


def prompt_controls(song: dict) -> dict[str, Any]:
    """The song's controls plus the structure of the original: the prompt every row of this song shares."""
    from lyrictool.controls import derive_controls

    return {**song["controls"], **derive_controls(song["lyrics"], ("structure",))}


# --- damages ----------------------------------------------------------------------------------------

def _broken_rhyme(song: dict, rng: random.Random, pool: list[dict]) -> str:
    from lyrictool.phonetics import rhyme_group

    target = song["controls"].get("rhyme")
    # The last two characters of other groups' lines: mostly whole words (清晨, 丝瓜), so a broken line
    # still reads as words and keeps its length; only the rhyme (and some sense) is lost.
    endings = sorted({line[-2:] for other in pool if other["controls"].get("rhyme") != target
                      for _, lines in _sections(other["lyrics"]) for line in lines})
    if not endings:
        raise UserError("broken_rhyme needs songs of another rhyme group in the pool")
    sections = _sections(song["lyrics"])
    slots = [(i, j) for i, (_, lines) in enumerate(sections) for j in range(len(lines))]
    for i, j in rng.sample(slots, max(2, (len(slots) + 1) // 2)):
        line = sections[i][1][j]
        for _ in range(20):
            candidate = line[:-2] + rng.choice(endings)
            if rhyme_group(candidate) != target:
                sections[i][1][j] = candidate
                break
    return _render(sections)


def _wrong_structure(song: dict, rng: random.Random, pool: list[dict]) -> str:
    sections = _sections(song["lyrics"])
    how = rng.choice(("untagged", "merged", "dropped") if len(sections) > 1 else ("untagged",))
    if how == "untagged":
        return "\n".join(line for _, lines in sections for line in lines)
    if how == "merged":
        return _render([(sections[0][0], [line for _, lines in sections for line in lines])])
    drop = rng.randrange(1, len(sections))
    return _render(sections[:drop] + sections[drop + 1:])


def _repetition(song: dict, rng: random.Random, pool: list[dict]) -> str:
    sections = _sections(song["lyrics"])
    i = rng.randrange(len(sections))
    tag, lines = sections[i]
    sections[i] = (tag, [rng.choice(lines)] * rng.randint(5, 8))
    return _render(sections)


def _off_topic(song: dict, rng: random.Random, pool: list[dict]) -> str:
    c = song["controls"]
    donors = [s for s in pool if s["controls"].get("topic") != c.get("topic")
              and s["controls"].get("genre") != c.get("genre")]
    if not donors:
        raise UserError("off_topic needs a song of another genre and topic in the pool")
    donor_lines = [line for _, lines in _sections(rng.choice(donors)["lyrics"]) for line in lines]
    sections = _sections(song["lyrics"])
    if len(sections) == 1:  # one section: its second half drifts
        tag, lines = sections[0]
        half = len(lines) // 2
        drift = [donor_lines[k % len(donor_lines)] for k in range(len(lines) - half)]
        return _render([(tag, lines[:half] + drift)])
    k = 0  # keep the opening section on topic; every later line comes from the donor
    for i in range(1, len(sections)):
        tag, lines = sections[i]
        sections[i] = (tag, [donor_lines[(k + j) % len(donor_lines)] for j in range(len(lines))])
        k += len(lines)
    return _render(sections)


def _truncated(song: dict, rng: random.Random, pool: list[dict]) -> str:
    sections = _sections(song["lyrics"])
    n = sum(len(lines) for _, lines in sections)
    keep = rng.randint(2, max(2, n // 2))
    out = []
    for tag, lines in sections:
        if keep <= 0:
            break
        out.append((tag, lines[:keep]))
        keep -= len(lines)
    return _render(out)


_DAMAGE_FUNCS = {
    "broken_rhyme": _broken_rhyme,
    "wrong_structure": _wrong_structure,
    "repetition": _repetition,
    "off_topic": _off_topic,
    "truncated": _truncated,
}


def damage(song: dict, kind: str, rng: random.Random, pool: list[dict]) -> str:
    """The song's lyrics damaged in one known way (``kind`` in DAMAGES); never equal to the original.

    ``pool`` is the corpus to borrow from (other rhyme groups' line endings, other genres' lines).
    """
    if kind not in _DAMAGE_FUNCS:
        raise UserError(f"unknown damage {kind!r}; use one of {', '.join(DAMAGES)}")
    text = _DAMAGE_FUNCS[kind](song, rng, pool)
    if text.strip() == song["lyrics"].strip():
        raise UserError(f"damage {kind!r} left song {song.get('id')!r} unchanged; it is too short to damage")
    return text


def _kinds_for(index: int, per_song: int) -> list[str]:
    """Damage kinds for the index-th song: a rotation, so every kind is used equally often."""
    if not 1 <= per_song <= len(DAMAGES):
        raise UserError(f"per_song must be 1 to {len(DAMAGES)} (one row per damage kind), got {per_song}")
    return [DAMAGES[(index + j) % len(DAMAGES)] for j in range(per_song)]


# --- rows -------------------------------------------------------------------------------------------

def make_ratings(songs: list[dict], seed: int = 0, per_song: int = 3) -> list[dict]:
    """Ratings rows: each song as written, then ``per_song`` damaged copies, all under the song's prompt.

    Row: ``{"controls", "lyrics", "ratings": {language, genre, content}, "source", "song_id"}`` where
    ``source`` is ``"original"`` or ``"damage:<kind>"`` and the ratings follow DAMAGE_RATINGS.
    """
    rng = random.Random(seed)
    rows = []
    for index, song in enumerate(songs):
        controls = prompt_controls(song)
        rows.append({"controls": controls, "lyrics": song["lyrics"], "ratings": dict(ORIGINAL_RATINGS),
                     "source": "original", "song_id": song["id"]})
        for kind in _kinds_for(index, per_song):
            rows.append({"controls": controls, "lyrics": damage(song, kind, rng, songs),
                         "ratings": dict(DAMAGE_RATINGS[kind]), "source": f"damage:{kind}",
                         "song_id": song["id"]})
    return rows


def make_preferences(songs: list[dict], seed: int = 0, per_song: int = 2) -> list[dict]:
    """Preference rows ``{"controls", "chosen", "rejected", "damage", "song_id"}``: the original is chosen
    over ``per_song`` damaged copies of itself (kinds rotate over DAMAGES)."""
    rng = random.Random(seed)
    rows = []
    for index, song in enumerate(songs):
        controls = prompt_controls(song)
        for kind in _kinds_for(index + 2, per_song):  # offset: other kinds than the ratings rows of this song
            rows.append({"controls": controls, "chosen": song["lyrics"],
                         "rejected": damage(song, kind, rng, songs), "damage": kind, "song_id": song["id"]})
    return rows


def make_prompts(songs: list[dict], seed: int = 0, n: int = 96) -> list[dict]:
    """Prompt rows ``{"id", "controls"}`` that recombine the songs' controls into requests no song answers: one
    song's structure and (every other row) line lengths, another's genre and topic, and the 13 rhyme groups in
    turn, never the shape song's own group."""
    from lyrictool.controls import derive_controls
    from lyrictool.phonetics.tables import SHISANZHE

    def layout(structure: list[dict]) -> tuple:
        return tuple((part["section"], part["lines"]) for part in structure)

    rng = random.Random(seed)
    groups = list(SHISANZHE)
    answered = {(s["controls"].get("topic"), s["controls"].get("rhyme"),
                 layout(derive_controls(s["lyrics"], ("structure",))["structure"])) for s in songs}
    rows = []
    for i in range(n):
        group = groups[i % len(groups)]
        wanted = ("structure", "line_lengths") if i % 2 else ("structure",)
        while True:  # a request no song answers: this topic, group and structure never occur together
            shape = rng.choice([s for s in songs if s["controls"].get("rhyme") != group])
            theme = rng.choice(songs)
            derived = derive_controls(shape["lyrics"], wanted)
            if (theme["controls"]["topic"], group, layout(derived["structure"])) not in answered:
                break
        controls = {"genre": theme["controls"]["genre"], "topic": theme["controls"]["topic"], "rhyme": group,
                    **derived}
        rows.append({"id": f"prompt-{i + 1:03d}", "controls": controls})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lyrictool.data.synthetic",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", default=str(SONGS_PATH), help="song rows (jsonl)")
    p.add_argument("--ratings", default=str(RATINGS_PATH), help="where to write ratings rows")
    p.add_argument("--preferences", default=str(PREFERENCES_PATH), help="where to write preference rows")
    p.add_argument("--prompts", default=str(PROMPTS_PATH), help="where to write sampling prompt rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-song", type=int, default=3, help="damaged copies per song in the ratings rows")
    p.add_argument("--check", action="store_true", help="compare with the files on disk; exit 1 if stale")
    args = p.parse_args(argv)
    try:
        songs = load_songs(args.songs)
        outputs = {Path(args.ratings): make_ratings(songs, args.seed, args.per_song),
                   Path(args.preferences): make_preferences(songs, args.seed),
                   Path(args.prompts): make_prompts(songs, args.seed)}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return write_or_check(outputs, check=args.check, command="python -m lyrictool.data.synthetic")


if __name__ == "__main__":
    raise SystemExit(main())
