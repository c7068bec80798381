"""The bundled demo data: songs as promised (rhyme, coverage, layout), derived ratings/preferences that
mean what they say and cannot drift from the songs, eval prompts and the safety lexicon."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from lyrictool.controls import parse_controls
from lyrictool.data import synthetic
from lyrictool.errors import UserError
from lyrictool.lyrics import parse, render
from lyrictool.metrics import song_metrics
from lyrictool.phonetics import group_names, rhyme_group

ROOT = Path(__file__).resolve().parents[1]
SHISANZHE = ("发花", "梭波", "乜斜", "一七", "姑苏", "怀来", "灰堆",
             "由求", "遥条", "言前", "人辰", "江阳", "中东")


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{path}:{n}: blank line"
        rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="module")
def songs() -> list[dict]:
    return read_jsonl(synthetic.SONGS_PATH)


@pytest.fixture(scope="module")
def ratings(songs) -> list[dict]:
    return synthetic.make_ratings(songs)


@pytest.fixture(scope="module")
def preferences(songs) -> list[dict]:
    return synthetic.make_preferences(songs)


# --- songs ---------------------------------------------------------------------------------------

def test_songs_have_required_fields_and_unique_ids(songs):
    assert len(songs) >= 120
    for s in songs:
        assert isinstance(s["id"], str) and isinstance(s["title"], str) and s["title"]
        assert isinstance(s["lyrics"], str) and s["lyrics"].strip()
        assert set(s["controls"]) == {"genre", "topic", "rhyme"}, s["id"]
        parse_controls(s["controls"], where=s["id"])  # valid for every command that reads controls
    assert len({s["id"] for s in songs}) == len(songs)
    assert synthetic.load_songs() == songs


def test_songs_cover_every_rhyme_group_and_several_genres(songs):
    assert set(SHISANZHE) == set(group_names("shisanzhe"))
    groups = Counter(s["controls"]["rhyme"] for s in songs)
    assert set(groups) == set(SHISANZHE)
    assert min(groups.values()) >= 8, groups
    assert len({s["controls"]["genre"] for s in songs}) >= 5
    assert len({s["controls"]["topic"] for s in songs}) >= 20


def test_song_lines_rhyme_in_their_declared_group(songs):
    total, misses = 0, []
    for s in songs:
        for line in parse(s["lyrics"]).lines:
            total += 1
            got = rhyme_group(line)
            if got != s["controls"]["rhyme"]:
                misses.append(f"{s['id']} {line!r}: {got}, declared {s['controls']['rhyme']}")
    assert total >= 120 * 6
    assert len(misses) / total <= 0.05, misses[:20]


def test_songs_are_short_tagged_and_in_canonical_layout(songs):
    for s in songs:
        doc = parse(s["lyrics"])
        assert render(doc) == s["lyrics"], s["id"]
        names = [sec.name for sec in doc.sections]
        assert None not in names and "verse" in names and "chorus" in names, (s["id"], names)
        assert 6 <= len(doc.lines) <= 12, s["id"]
        for line in doc.lines:
            assert 5 <= len(line) <= 9 and all("\u4e00" <= ch <= "\u9fff" for ch in line), (s["id"], line)
    tags = Counter(sec.name for s in songs for sec in parse(s["lyrics"]).sections)
    assert {"bridge", "pre-chorus", "outro"} <= set(tags)


def test_no_duplicate_songs(songs):
    assert len({s["lyrics"] for s in songs}) == len(songs)
    assert len({s["title"] for s in songs}) == len(songs)


# --- damages ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", synthetic.DAMAGES)
def test_each_damage_changes_the_text_and_its_rule_lowers_the_aspect_it_hurts(songs, kind):
    rng = random.Random(1)
    for song in songs[::13]:
        assert synthetic.damage(song, kind, rng, songs) != song["lyrics"]
    ratings = synthetic.DAMAGE_RATINGS[kind]
    assert synthetic.HURTS[kind]
    for aspect in synthetic.ASPECTS:
        assert 1 <= ratings[aspect] <= synthetic.ORIGINAL_RATINGS[aspect]
    for aspect in synthetic.HURTS[kind]:
        assert ratings[aspect] <= synthetic.ORIGINAL_RATINGS[aspect] - 2


def _metrics(text: str, song: dict) -> dict:
    return song_metrics(text, synthetic.prompt_controls(song))


def test_damages_do_what_they_claim_by_the_objective_metrics(songs):
    rng = random.Random(0)
    for song in songs[::7]:
        good = _metrics(song["lyrics"], song)
        assert good["rhyme_accuracy"] == 1.0 and good["structure_accuracy"] == 1.0
        assert good["format_validity"] == 1.0

        broken = _metrics(synthetic.damage(song, "broken_rhyme", rng, songs), song)
        assert broken["rhyme_accuracy"] <= 0.6 and broken["n_lines"] == good["n_lines"]

        misshaped = synthetic.damage(song, "wrong_structure", rng, songs)
        assert _metrics(misshaped, song)["structure_accuracy"] < 1.0

        looped = synthetic.damage(song, "repetition", rng, songs)
        assert max(Counter(parse(looped).lines).values()) >= 5
        assert _metrics(looped, song)["format_validity"] == 0.0

        short = _metrics(synthetic.damage(song, "truncated", rng, songs), song)
        assert 2 <= short["n_lines"] <= good["n_lines"] // 2 and short["structure_accuracy"] < 1.0

        drifted = parse(synthetic.damage(song, "off_topic", rng, songs))
        original = parse(song["lyrics"])
        assert drifted.sections[0].lines == original.sections[0].lines  # starts on topic ...
        foreign = [line for line in drifted.lines if line not in original.lines]
        assert len(foreign) == len(original.lines) - len(original.sections[0].lines)  # ... then drifts
        donors = [s for s in songs if set(foreign) <= set(parse(s["lyrics"]).lines)]
        assert donors and all(d["controls"]["genre"] != song["controls"]["genre"]
                              and d["controls"]["topic"] != song["controls"]["topic"] for d in donors)


def test_damage_rejects_unknown_kind_and_bad_counts(songs):
    with pytest.raises(UserError, match="unknown damage"):
        synthetic.damage(songs[0], "typo", random.Random(0), songs)
    with pytest.raises(UserError, match="per_song"):
        synthetic.make_ratings(songs[:2], per_song=0)


def test_load_songs_names_the_bad_row(tmp_path):
    path = tmp_path / "songs.jsonl"
    good = '{"id": "a", "lyrics": "[Verse]\\n一二三四五", "controls": {}}'
    path.write_text(good + '\n{"id": "b", "controls": {}}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"songs.jsonl:2: .*'lyrics'"):
        synthetic.load_songs(path)


# --- ratings and preferences ---------------------------------------------------------------------------

def test_ratings_rows_give_pairs_within_each_prompt(songs, ratings):
    by_prompt = defaultdict(list)
    for row in ratings:
        assert set(row["ratings"]) == set(synthetic.ASPECTS)
        assert all(isinstance(v, int) and 1 <= v <= 5 for v in row["ratings"].values())
        parse_controls(row["controls"])
        by_prompt[json.dumps(row["controls"], ensure_ascii=False, sort_keys=True)].append(row)
    assert len(ratings) == len(songs) * 4
    assert all(len(rows) >= 2 for rows in by_prompt.values())
    for rows in by_prompt.values():
        originals = [r for r in rows if r["source"] == "original"]
        assert originals
        for r in rows:
            if r["source"] == "original":
                continue
            kind = r["source"].removeprefix("damage:")
            assert r["lyrics"] not in {o["lyrics"] for o in originals}
            for aspect in synthetic.HURTS[kind]:
                assert all(r["ratings"][aspect] < o["ratings"][aspect] for o in originals)
    assert set(Counter(r["source"] for r in ratings).values()) <= {len(songs), len(songs) * 3 // 5,
                                                                     len(songs) * 3 // 5 + 1}


def test_preference_rows_prefer_the_original(songs, preferences):
    originals = {s["lyrics"] for s in songs}
    assert len(preferences) == len(songs) * 2
    for row in preferences:
        assert row["chosen"] != row["rejected"]
        assert row["chosen"] in originals and row["rejected"] not in originals
        assert row["damage"] in synthetic.DAMAGES
    assert set(Counter(r["damage"] for r in preferences)) == set(synthetic.DAMAGES)


def test_rows_are_deterministic_for_a_seed(songs):
    few = songs[::13]  # one song per rhyme group: broken_rhyme borrows other groups' endings
    assert synthetic.make_ratings(few, seed=3) == synthetic.make_ratings(few, seed=3)
    assert synthetic.make_ratings(few, seed=3) != synthetic.make_ratings(few, seed=4)


def test_committed_rows_equal_a_fresh_regeneration(songs, ratings, preferences):
    assert read_jsonl(synthetic.RATINGS_PATH) == ratings, "run: python -m lyrictool.data.synthetic"
    assert read_jsonl(synthetic.PREFERENCES_PATH) == preferences, "run: python -m lyrictool.data.synthetic"
    assert read_jsonl(synthetic.PROMPTS_PATH) == synthetic.make_prompts(songs), "run: python -m lyrictool.data.synthetic"


def test_sampling_prompts_ask_for_what_no_song_or_eval_prompt_is(songs):
    """builtin:demo-prompts (rejection sampling's prompts) are new requests: no song has that topic, rhyme group
    and structure together, none is an eval prompt, and every rhyme group is asked for."""
    from lyrictool.controls import derive_controls

    rows = read_jsonl(synthetic.PROMPTS_PATH)
    assert len({r["id"] for r in rows}) == len(rows) >= 64
    answered = {(s["controls"]["topic"], s["controls"]["rhyme"],
                 json.dumps(derive_controls(s["lyrics"], ("structure",))["structure"])) for s in songs}
    asked = [(r["controls"]["topic"], r["controls"]["rhyme"], json.dumps(r["controls"]["structure"])) for r in rows]
    assert not answered & set(asked)
    evals = [r["controls"] for r in read_jsonl(ROOT / "lyrictool" / "data" / "demo" / "eval-prompts.jsonl")]
    assert not [r for r in rows if r["controls"] in evals]
    assert Counter(r["controls"]["rhyme"] for r in rows).keys() == set(SHISANZHE)
    for r in rows:
        parse_controls(r["controls"], where=r["id"])


def test_check_mode_reports_stale_files(tmp_path, capsys):
    ratings, prefs = tmp_path / "r.jsonl", tmp_path / "p.jsonl"
    args = ["--ratings", str(ratings), "--preferences", str(prefs)]
    assert synthetic.main(args + ["--check"]) == 1
    assert synthetic.main(args) == 0
    assert synthetic.main(args + ["--check"]) == 0
    assert ratings.read_text(encoding="utf-8") == synthetic.RATINGS_PATH.read_text(encoding="utf-8")


# --- eval prompts and safety lexicon ----------------------------------------------------------------------

def test_eval_prompts_cover_groups_genres_and_structures(songs):
    rows = read_jsonl(ROOT / "lyrictool" / "data" / "demo" / "eval-prompts.jsonl")
    assert len(rows) >= 39 and len({r["id"] for r in rows}) == len(rows)
    controls = [parse_controls(r["controls"], where=r["id"]) for r in rows]
    groups = Counter(c.rhyme for c in controls)
    assert set(groups) == set(SHISANZHE) and min(groups.values()) >= 3
    assert {s["controls"]["genre"] for s in songs} <= {c.genre for c in controls}
    structures = {tuple((s.section, s.lines) for s in c.structure) for c in controls if c.structure}
    assert len(structures) >= 4
    assert sum(c.line_lengths is not None for c in controls) >= 5
    assert sum(c.scheme is not None for c in controls) >= 5
    unseen = {c.topic for c in controls} - {s["controls"]["topic"] for s in songs}
    assert len(unseen) >= len(rows) // 2


def test_safety_blocklist_loads_and_passes_every_demo_song(songs):
    from lyrictool.rewards import Blocklist, load_blocklist

    blocklist = Blocklist(load_blocklist(ROOT / "recipes" / "safety" / "blocklist.txt"))
    assert 20 <= len(blocklist.terms) <= 200 and all(len(t) >= 2 for t in blocklist.terms)
    assert [s["id"] for s in songs if blocklist.hits(s["lyrics"])] == []
    assert blocklist.safety("[Verse]\n今夜我要去吸毒") == 0.0
