"""A MOS study in one SQLite file: blinded samples, raters with their own links, one row per answer.

``lyrictool eval ... --mos-study study.db`` writes it; ``lyrictool serve`` with ``pages.rate`` and
``pages.study`` serves it at ``/rate``; ``lyrictool eval --mos-ratings study.db`` reads it back (next to, or
instead of, CSV sheets) and reports MOS with CIs and rater agreement exactly as for the sheets.

Tables (the file is the study; copy it to back it up):

- ``meta``: study id, aspects, scale.
- ``items``: the blinded samples (item id such as ``k3f9a1-007``, the request text, the lyrics).
- ``unblind``: item id -> system, prompt id.  Read only by :meth:`Study.ratings`; nothing a rater can reach
  queries it.
- ``raters``: name, the SHA-256 of their token (the token itself is shown once, in their link), and their
  own shuffled order of the items.
- ``ratings``: one row per rater x item x aspect, written (and committed) the moment the rater clicks, so a
  closed tab or a killed server loses nothing.  WAL mode: the server writes while ``eval`` reads.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lyrictool.errors import UserError
from lyrictool.eval.aspects import (
    ASPECT_HELP,
    ASPECTS,
    OPTIONAL_ASPECTS,
    SCALE,
    SCALE_WORDS,
    blind,
    request_text,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, position INTEGER NOT NULL, request TEXT NOT NULL,
                                  lyrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unblind (item_id TEXT PRIMARY KEY REFERENCES items(item_id), system TEXT NOT NULL,
                                    prompt_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (rater TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE,
                                   item_order TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (rater TEXT NOT NULL REFERENCES raters(rater),
                                    item_id TEXT NOT NULL REFERENCES items(item_id),
                                    aspect TEXT NOT NULL, score INTEGER NOT NULL, answered REAL NOT NULL,
                                    PRIMARY KEY (rater, item_id, aspect));
"""
_MAGIC = b"SQLite format 3\x00"


def is_study_file(path: str | Path) -> bool:
    """Whether ``path`` is an SQLite file (a study) rather than a CSV sheet."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Study:
    """One study file.  Each method opens its own short connection, so any thread (or process) may call it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not is_study_file(self.path):
            raise UserError(f"{self.path}: not a MOS study database; create one with "
                            "`lyrictool eval RECIPE --mos-study FILE.db`")
        with self._db() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self.study_id = meta.get("study_id", "")
        self.aspects = json.loads(meta.get("aspects", json.dumps(ASPECTS)))  # every sample needs these
        self.optional_aspects = json.loads(meta.get("optional_aspects", "[]"))  # none in a study from before safety
        self.scale = tuple(json.loads(meta.get("scale", json.dumps(SCALE))))

    @property
    def all_aspects(self) -> list[str]:
        return list(self.aspects) + [a for a in self.optional_aspects if a not in self.aspects]

    def aspect_help(self) -> list[dict[str, Any]]:
        """What the rating page shows per aspect: name, help, whether optional, the words of its scale."""
        return [{"name": a, "help": ASPECT_HELP.get(a, ""), "optional": a not in self.aspects,
                 **({"words": {str(k): v for k, v in SCALE_WORDS[a].items()}} if a in SCALE_WORDS else {})}
                for a in self.all_aspects]

    @contextmanager
    def _db(self):
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)  # autocommit; explicit transactions
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an answer acknowledged is an answer on disk
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    # ---- creation ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, items: list[dict], *, seed: int = 0) -> Study:
        """A new study of ``items`` (dicts with ``system``, ``prompt_id``, ``controls``, ``lyrics``)."""
        from lyrictool.lyrics import strip_hints

        path = Path(path)
        if not items:
            raise UserError(f"--mos-study {path}: no songs to rate")
        if path.exists():
            raise UserError(f"--mos-study {path}: already exists; add raters with `lyrictool eval --mos-study "
                            f"{path} --mos-raters NAME`, or choose a new file")
        study_id, blinded = blind([{**i, "prompt_id": str(i["prompt_id"])} for i in items], seed, "s")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"--mos-study {path}: cannot create ({e})") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [("study_id", study_id), ("aspects", json.dumps(list(ASPECTS))),
                            ("optional_aspects", json.dumps(list(OPTIONAL_ASPECTS))),
                            ("scale", json.dumps(list(SCALE))), ("seed", str(seed)), ("created", str(time.time()))])
            for pos, (item_id, item) in enumerate(blinded, 1):
                db.execute("INSERT INTO items VALUES (?, ?, ?, ?)",
                           (item_id, pos, request_text(item.get("controls")), strip_hints(item["lyrics"])))
                db.execute("INSERT INTO unblind VALUES (?, ?, ?)", (item_id, item["system"], item["prompt_id"]))
            db.execute("COMMIT")
        finally:
            db.close()
        return cls(path)

    def add_raters(self, names: list[str]) -> dict[str, str]:
        """New raters, each with a fresh random token and their own shuffled order; returns name -> token."""
        names = [n.strip() for n in names if n.strip()]
        with self._db() as db:
            items = [row[0] for row in db.execute("SELECT item_id FROM items ORDER BY position")]
            known = {row[0] for row in db.execute("SELECT rater FROM raters")}
            taken = sorted(set(names) & known)
            if taken:
                raise UserError(f"--mos-raters: {', '.join(taken)} already rate{'s' if len(taken) == 1 else ''} "
                                f"in {self.path}; choose new names")
            if len(set(names)) != len(names):
                raise UserError("--mos-raters: a name is given twice")
            tokens = {}
            db.execute("BEGIN")
            for name in names:
                token = secrets.token_urlsafe(24)
                order = list(items)
                random.Random(f"{self.study_id}:{name}").shuffle(order)
                db.execute("INSERT INTO raters VALUES (?, ?, ?, ?)",
                           (name, _token_hash(token), json.dumps(order), time.time()))
                tokens[name] = token
            db.execute("COMMIT")
        return tokens

    # ---- what a rater may see -----------------------------------------------------------------------------------
    def rater_for_token(self, token: str) -> str | None:
        """The rater a token belongs to (looked up by its hash), or None."""
        if not token:
            return None
        with self._db() as db:
            row = db.execute("SELECT rater FROM raters WHERE token_sha256 = ?", (_token_hash(token),)).fetchone()
        return row[0] if row else None

    def _order(self, db, rater: str) -> list[str]:
        row = db.execute("SELECT item_order FROM raters WHERE rater = ?", (rater,)).fetchone()
        return json.loads(row[0]) if row else []

    def _answers(self, db, rater: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for item_id, aspect, score in db.execute("SELECT item_id, aspect, score FROM ratings WHERE rater = ?",
                                                 (rater,)):
            out.setdefault(item_id, {})[aspect] = score
        return out

    def progress(self, rater: str) -> dict[str, Any]:
        """How far ``rater`` is: samples fully rated, the first one not yet (1-based in their order, or None)."""
        with self._db() as db:
            order = self._order(db, rater)
            answers = self._answers(db, rater)
        complete = [all(a in answers.get(item_id, {}) for a in self.aspects) for item_id in order]
        nxt = next((i + 1 for i, c in enumerate(complete) if not c), None)
        return {"total": len(order), "done": sum(complete), "next": nxt}

    def sample(self, rater: str, n: int) -> dict[str, Any] | None:
        """The ``n``-th sample in ``rater``'s order (request, lyrics, their own scores so far), or None."""
        with self._db() as db:
            order = self._order(db, rater)
            if not 1 <= n <= len(order):
                return None
            item_id = order[n - 1]
            request, lyrics = db.execute("SELECT request, lyrics FROM items WHERE item_id = ?", (item_id,)).fetchone()
            scores = dict(db.execute("SELECT aspect, score FROM ratings WHERE rater = ? AND item_id = ?",
                                     (rater, item_id)).fetchall())
        return {"n": n, "total": len(order), "request": request, "lyrics": lyrics, "scores": scores}

    def answer(self, rater: str, n: int, aspect: str, score: int) -> bool:
        """Record (or change) one answer; committed before this returns.  False if ``n`` is out of range."""
        if aspect not in self.all_aspects:
            raise ValueError(f"unknown aspect {aspect!r}; one of {', '.join(self.all_aspects)}")
        if not (isinstance(score, int) and self.scale[0] <= score <= self.scale[1]):
            raise ValueError(f"score must be an integer {self.scale[0]}-{self.scale[1]}")
        with self._db() as db:
            order = self._order(db, rater)
            if not 1 <= n <= len(order):
                return False
            db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?) ON CONFLICT (rater, item_id, aspect) "
                       "DO UPDATE SET score = excluded.score, answered = excluded.answered",
                       (rater, order[n - 1], aspect, score, time.time()))
        return True

    # ---- the analyst's side ---------------------------------------------------------------------------------------
    def raters(self) -> list[str]:
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT rater FROM raters ORDER BY created, rater")]

    def ratings(self) -> list[dict]:
        """Every rated (rater, item), un-blinded, in :func:`lyrictool.eval.mos.load_ratings`'s shape."""
        by_key: dict[tuple[str, str], dict] = {}
        with self._db() as db:
            rows = db.execute("SELECT r.rater, r.item_id, r.aspect, r.score, u.system, u.prompt_id FROM ratings r "
                              "JOIN unblind u ON u.item_id = r.item_id ORDER BY r.rater, r.item_id").fetchall()
        for rater, item_id, aspect, score, system, prompt_id in rows:
            entry = by_key.setdefault((rater, item_id), {
                "rater": rater, "item": item_id, "system": system, "prompt_id": prompt_id, "scores": {},
                "where": f"{self.path}:{rater}"})
            entry["scores"][aspect] = score
        return list(by_key.values())


def aspect_help() -> list[dict[str, Any]]:
    """The aspects of a new study, as the rating page shows them (:meth:`Study.aspect_help`)."""
    return [{"name": a, "help": ASPECT_HELP[a], "optional": a in OPTIONAL_ASPECTS,
             **({"words": {str(k): v for k, v in SCALE_WORDS[a].items()}} if a in SCALE_WORDS else {})}
            for a in ASPECTS + OPTIONAL_ASPECTS]
