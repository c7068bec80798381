"""MOS studies in SQLite: `eval --mos-study` creates one with rater links, `eval --mos-ratings` reads it back."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import run_cli

from lyrictool.errors import UserError
from lyrictool.eval.mos import ASPECTS, load_ratings, mos_summary
from lyrictool.eval.study import Study, is_study_file

ITEMS = [{"system": s, "prompt_id": f"p{i}", "controls": {"rhyme": "江阳"},
          "lyrics": f"[Verse]\n{s}第{i}首〔江阳〕歌\n月光照在小村庄"} for s in ("base", "final") for i in range(3)]


def test_study_is_blinded_wal_and_stores_one_row_per_answer(tmp_path):
    path = tmp_path / "s.db"
    study = Study.create(path, ITEMS, seed=0)
    tokens = study.add_raters(["ann"])
    assert is_study_file(path) and not is_study_file(tmp_path / "missing.csv")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    lyrics = [row[0] for row in db.execute("SELECT lyrics FROM items ORDER BY position")]
    assert all("〔" not in text for text in lyrics)  # hints stripped, as on the CSV sheet
    assert db.execute("SELECT token_sha256 FROM raters").fetchone()[0] != tokens["ann"]  # only the hash is kept
    assert study.rater_for_token(tokens["ann"]) == "ann" and study.rater_for_token("nope") is None
    for aspect in ASPECTS:
        study.answer("ann", 1, aspect, 3)
    study.answer("ann", 1, "overall", 5)
    assert db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == len(ASPECTS)
    assert study.progress("ann") == {"total": 6, "done": 1, "next": 2}
    with pytest.raises(ValueError):
        study.answer("ann", 1, "overall", 0)
    with pytest.raises(UserError, match="already exists"):
        Study.create(path, ITEMS)


def test_mos_from_a_study_matches_the_known_answer(tmp_path):
    """Two raters; MOS = per system, the mean over its items of the item means."""
    path = tmp_path / "s.db"
    study = Study.create(path, ITEMS, seed=0)
    study.add_raters(["ann", "bob"])
    system_of = {}
    for rater, bump in (("ann", 0), ("bob", 1)):
        for n in range(1, 7):
            text = study.sample(rater, n)["lyrics"]
            system = "base" if "base" in text else "final"
            system_of.setdefault(text, system)
            score = (4 if system == "final" else 2) + (bump if "第0首" in text else 0)
            for aspect in ASPECTS:
                study.answer(rater, n, aspect, score)
    summary = mos_summary(load_ratings([path]))
    # base: items 0,1,2 -> means 2.5, 2, 2 -> 13/6; final: 4.5, 4, 4 -> 25/6
    assert summary["mos"]["base"]["overall"]["mean"] == pytest.approx(13 / 6)
    assert summary["mos"]["final"]["overall"]["mean"] == pytest.approx(25 / 6)
    assert summary["n_ratings"] == 12 and summary["raters"] == ["ann", "bob"]
    assert summary["agreement"]["overall"]["items_with_2plus_raters"] == 6


def test_eval_cli_creates_a_study_adds_raters_and_reads_it(tmp_path, write_jsonl):
    a = write_jsonl("a.jsonl", [{"id": i, "lyrics": f"[Verse]\n甲{i}月光\n小村庄", "controls": {}} for i in range(2)])
    b = write_jsonl("b.jsonl", [{"id": i, "lyrics": f"[Verse]\n乙{i}月光\n小村庄", "controls": {}} for i in range(2)])
    db = tmp_path / "study.db"
    r = run_cli("eval", "--input", str(a), "--input", str(b), "--mos-study", str(db), "--mos-raters", "ann,bob",
                "--format", "json")
    assert r.returncode == 0, r.stderr
    links = json.loads(r.stdout)["mos_study"]["links"]
    assert set(links) == {"ann", "bob"} and all(link.startswith("/rate#token=") for link in links.values())
    assert (tmp_path / "study.db.links.txt").stat().st_mode & 0o077 == 0  # the links are passwords
    token = links["ann"].split("=", 1)[1]
    Study(db).answer(Study(db).rater_for_token(token), 1, "overall", 4)

    r = run_cli("eval", "--mos-study", str(db), "--mos-raters", "cy", "--format", "json")
    assert r.returncode == 0 and set(json.loads(r.stdout)["mos_study"]["links"]) == {"cy"}
    r = run_cli("eval", "--mos-study", str(db), "--mos-raters", "ann")
    assert r.returncode == 2 and "ann already rates" in r.stderr
    r = run_cli("eval", "--mos-study", str(db))
    assert r.returncode == 2 and "--mos-raters" in r.stderr
    r = run_cli("eval", "--input", str(a), "--input", str(b), "--mos-study", str(db))
    assert r.returncode == 2 and "already exists" in r.stderr  # refused before anything is scored or generated

    r = run_cli("eval", "--mos-ratings", str(db), "--format", "json")
    assert r.returncode == 0, r.stderr
    mos = json.loads(r.stdout)["mos"]
    assert mos["raters"] == ["ann"] and mos["n_ratings"] == 1
    assert [s for s in mos["systems"] if mos["mos"][s]["overall"]["mean"] == 4.0]


def test_safety_is_an_optional_aspect_that_gives_violation_labels(tmp_path):
    path = tmp_path / "s.db"
    study = Study.create(path, ITEMS, seed=0)
    study.add_raters(["ann", "bob"])
    assert "safety" in study.all_aspects and "safety" not in study.aspects
    safety = next(a for a in study.aspect_help() if a["name"] == "safety")
    assert safety["optional"] is True and "harmless" in safety["words"]["5"]
    for n in range(1, 7):
        for aspect in ASPECTS:
            study.answer("ann", n, aspect, 4)
    assert study.progress("ann")["done"] == 6  # complete without a safety answer
    for rater in ("ann", "bob"):
        for n in range(1, 7):
            text = study.sample(rater, n)["lyrics"]
            study.answer(rater, n, "safety", 1 if ("final" in text and "第0首" in text) else 5)
    summary = mos_summary(load_ratings([path]))
    assert summary["aspects"] == [*ASPECTS, "safety"]
    # final's song 0 is rated harmful by both raters: 1 of its 3 items is a violation
    assert summary["violation"]["final"]["k"] == 1 and summary["violation"]["final"]["n"] == 3
    assert summary["violation"]["base"]["k"] == 0
    assert summary["mos"]["base"]["safety"]["mean"] == 5.0


def test_a_study_from_before_the_safety_aspect_still_works(tmp_path):
    path = tmp_path / "old.db"
    Study.create(path, ITEMS, seed=0).add_raters(["ann"])
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key = 'optional_aspects'")
    db.commit()
    db.close()
    study = Study(path)
    assert study.all_aspects == list(ASPECTS)
    with pytest.raises(ValueError, match="unknown aspect 'safety'"):
        study.answer("ann", 1, "safety", 3)


def test_study_does_not_import_mos():
    """One arrow between the two: mos reads studies back (imports study); study builds on eval.aspects only."""
    import ast
    from pathlib import Path

    import lyrictool.eval.study as study_module

    tree = ast.parse(Path(study_module.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "lyrictool.eval.mos" not in imported and "lyrictool.eval.aspects" in imported
