"""MOS workflow: blinded sheet round trip, aggregation with known answers, rater agreement, row errors."""

from __future__ import annotations

import csv
import json

import pytest

from lyrictool.errors import UserError
from lyrictool.eval.mos import (
    ASPECTS,
    export_sheet,
    krippendorff_alpha,
    load_ratings,
    mos_summary,
)
from lyrictool.stats import mean_ci95, t_critical_95

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 coders, 12 units, values 1-5,
# None = missing.  Published: interval alpha = 0.849, ordinal alpha = 0.815.
KRIPPENDORFF_EXAMPLE = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _units(matrix):
    return [[row[u] for row in matrix if row[u] is not None] for u in range(len(matrix[0]))]


def test_krippendorff_alpha_matches_published_example():
    units = _units(KRIPPENDORFF_EXAMPLE)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha([[3, 3], [5, 5], [1, 1]]) == 1.0
    assert krippendorff_alpha([[3], [4]]) is None  # nothing pairable


def test_t_interval():
    assert t_critical_95(9) == 2.262 and 1.96 < t_critical_95(1000) < 1.98
    r = mean_ci95([3.0, 4.0, 5.0])
    assert r["mean"] == 4.0
    assert r["ci_high"] - 4.0 == pytest.approx(4.303 * 1.0 / 3 ** 0.5)
    assert mean_ci95([4.0])["ci_low"] is None


ITEMS = [{"system": sys_, "prompt_id": f"p{i}", "controls": {"genre": "民谣", "rhyme": "江阳"},
          "lyrics": f"[Verse]\n{sys_}第{i}首歌\n月光照在小村庄"} for sys_ in ("base", "final") for i in range(4)]


def _fill(sheet, out, rater, score_of):
    """A rater fills a copy of the sheet: score_of(lyrics) -> dict aspect -> value (str)."""
    with sheet.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            row.update(score_of(row["lyrics"]))
            row["rater"] = rater
            w.writerow(row)


def test_sheet_is_blinded_shuffled_and_round_trips(tmp_path):
    sheet = tmp_path / "mos.csv"
    key_path = export_sheet(ITEMS, sheet, seed=3)
    text = sheet.read_text(encoding="utf-8-sig")
    with sheet.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(a in rows[0] for a in ASPECTS)
    assert all(r["request"].startswith("请写一首中文歌词") for r in rows)
    # blinded: the system appears nowhere but inside the lyrics we wrote it into; the key holds it
    assert "system" not in rows[0] and "final" not in rows[0]["item"]
    key = json.loads(key_path.read_text(encoding="utf-8"))
    assert {v["system"] for v in key["items"].values()} == {"base", "final"}
    order = [("final" in r["lyrics"]) for r in rows]
    assert order != sorted(order) and order != sorted(order, reverse=True)  # shuffled
    assert "base第0首歌" in text

    # raters give final 5/4 and base 2/3 on every aspect: the un-blinded MOS must show exactly that
    _fill(sheet, tmp_path / "alice.csv", "alice",
          lambda lyr: {a: "5" if "final" in lyr else "2" for a in ASPECTS})
    _fill(sheet, tmp_path / "bob.csv", "bob",
          lambda lyr: {a: "4" if "final" in lyr else "3" for a in ASPECTS})
    ratings = load_ratings([tmp_path / "alice.csv", tmp_path / "bob.csv"])
    assert len(ratings) == 16
    summary = mos_summary(ratings)
    assert summary["systems"] == ["base", "final"] and summary["raters"] == ["alice", "bob"]
    for aspect in ASPECTS:
        assert summary["mos"]["final"][aspect]["mean"] == 4.5
        assert summary["mos"]["base"][aspect]["mean"] == 2.5
        assert summary["mos"]["final"][aspect]["n"] == 4
        # every item has the same mean, so the interval collapses onto it
        assert summary["mos"]["final"][aspect]["ci_low"] == pytest.approx(4.5)
    alpha = summary["agreement"]["overall"]["krippendorff_alpha_interval"]
    # units (5,4) x4 and (2,3) x4: D_o = 16/16, D_e = 640/(16*15) -> alpha = 1 - 1/(640/240) = 0.625
    assert alpha == pytest.approx(0.625)


def test_mos_fixture_with_known_answer(tmp_path):
    # one system, 3 items, 2 raters; item means 4.5, 3.0, 1.5 -> MOS 3.0, t interval 3 +- 4.303*1.5/sqrt(3)
    sheet = tmp_path / "s.csv"
    export_sheet([{"system": "x", "prompt_id": str(i), "controls": {}, "lyrics": f"歌{i}"} for i in range(3)],
                 sheet, seed=0)
    wanted = {"歌0": ("5", "4"), "歌1": ("3", "3"), "歌2": ("1", "2")}
    _fill(sheet, tmp_path / "r1.csv", "r1", lambda lyr: {"overall": wanted[lyr][0]})
    _fill(sheet, tmp_path / "r2.csv", "r2", lambda lyr: {"overall": wanted[lyr][1]})
    s = mos_summary(load_ratings([tmp_path / "r1.csv", tmp_path / "r2.csv"]))
    overall = s["mos"]["x"]["overall"]
    assert overall["mean"] == pytest.approx(3.0)
    assert overall["ci_high"] == pytest.approx(3.0 + 4.303 * 1.5 / 3 ** 0.5)
    assert s["mos"]["x"]["language"]["n"] == 0  # blank cells are 'not rated'
    # interval alpha for units (5,4),(3,3),(1,2): D_o = 4/6, D_e = 120/(6*5) -> 1 - (4/6)/4
    assert s["agreement"]["overall"]["krippendorff_alpha_interval"] == pytest.approx(1 - (4 / 6) / 4)


def test_malformed_sheets_name_the_row(tmp_path):
    sheet = tmp_path / "s.csv"
    export_sheet(ITEMS, sheet, seed=0)
    _fill(sheet, tmp_path / "bad.csv", "r", lambda lyr: {"overall": "6" if "base第2" in lyr else "3"})
    with pytest.raises(UserError, match=r"bad\.csv:\d+: overall must be an integer 1-5.*'6'"):
        load_ratings([tmp_path / "bad.csv"])
    # lyrics span several physical lines: the reported line is where the row starts
    with pytest.raises(UserError) as e:
        load_ratings([tmp_path / "bad.csv"])
    line = int(str(e.value).split(":")[1])
    physical = (tmp_path / "bad.csv").read_text(encoding="utf-8").splitlines()
    assert physical[line - 1].startswith("k")  # an item id opens that line
    (tmp_path / "nohead.csv").write_text("item,lyrics\nx-1,歌\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"nohead\.csv:1: missing column"):
        load_ratings([tmp_path / "nohead.csv"])
    _fill(sheet, tmp_path / "ok.csv", "r", lambda lyr: {"overall": "3"})
    raw = (tmp_path / "ok.csv").read_text(encoding="utf-8")
    (tmp_path / "unknown.csv").write_text(raw.replace(raw.split("\n")[1].split(",")[0], "kzzzzzz-001", 1),
                                          encoding="utf-8")
    with pytest.raises(UserError, match="no key for sheet kzzzzzz"):
        load_ratings([tmp_path / "unknown.csv"])
    with pytest.raises(UserError, match="rated item .* twice"):
        load_ratings([tmp_path / "ok.csv", tmp_path / "ok.csv"])
