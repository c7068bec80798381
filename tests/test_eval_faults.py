"""`lyrictool eval` through the CLI on the inputs users get wrong: empty and BOM-prefixed --input files, and the
MOS round trip (--mos-sheet, then --mos-ratings) with a header-only, a non-UTF-8 and a one-row sheet."""

from __future__ import annotations

import csv
import io
import json

from conftest import one_error_line, run_cli

ASPECTS = ("language", "genre_relevance", "content", "singability", "overall")
GENERATIONS = [{"id": "a", "lyrics": "月光洒满窗\n思念我的故乡", "controls": {"rhyme": "江阳"}},
               {"id": "b", "lyrics": "路边一朵花\n何时能回家", "controls": {"rhyme": "江阳"}}]


def test_an_empty_input_file_is_an_error_not_n_0(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    for fmt in ("json", "table"):
        err = one_error_line(run_cli("eval", "--input", str(empty), "--format", fmt))
        assert str(empty) in err and "no" in err and "rows" in err


def test_an_input_file_saved_with_a_bom_is_scored(tmp_path, write_jsonl):
    plain = write_jsonl("plain.jsonl", GENERATIONS)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    results = []
    for path in (plain, bom):
        r = run_cli("eval", "--input", str(path), "--format", "json")
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout)["metrics"])
    assert results[0] == results[1] and results[1]["n"] == 2 and results[1]["rhyme_accuracy"] == 0.5
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(plain.read_bytes() + '{"lyrics": "月光"}\n'.encode("gbk"))
    assert f"{bad}:3: not UTF-8" in one_error_line(run_cli("eval", "--input", str(bad)))


def _export(tmp_path, write_jsonl) -> tuple[list[str], list[list[str]]]:
    gens = write_jsonl("gens.jsonl", GENERATIONS)
    sheet = tmp_path / "sheet.csv"
    r = run_cli("eval", "--input", str(gens), "--mos-sheet", str(sheet), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert len(list(tmp_path.glob("mos-key-*.json"))) == 1  # the key stays with the sheet, apart from raters
    rows = list(csv.reader(io.StringIO(sheet.read_text(encoding="utf-8-sig"), newline="")))
    return rows[0], rows[1:]


def _write(path, header, rows, encoding="utf-8"):
    with path.open("w", encoding=encoding, newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_mos_sheet_then_ratings_through_the_cli(tmp_path, write_jsonl):
    header, rows = _export(tmp_path, write_jsonl)
    assert len(rows) == 2 and all(h in header for h in ("item", "lyrics", *ASPECTS, "rater"))
    col = {h: i for i, h in enumerate(header)}
    filled = []
    for rater, good, bad in (("alice", "5", "2"), ("bob", "4", "3")):
        out = []
        for row in rows:
            row = list(row)
            for a in ASPECTS:
                row[col[a]] = good if "故乡" in row[col["lyrics"]] else bad  # system "gens" wrote both
            row[col["rater"]] = rater
            out.append(row)
        filled.append(_write(tmp_path / f"{rater}.csv", header, out))
    r = run_cli("eval", "--mos-ratings", str(filled[0]), "--mos-ratings", str(filled[1]), "--format", "json")
    assert r.returncode == 0, r.stderr
    mos = json.loads(r.stdout)["mos"]
    assert mos["systems"] == ["gens"] and mos["raters"] == ["alice", "bob"]
    # item means 4.5 and 2.5: the system's MOS is their mean, over 2 items
    assert mos["mos"]["gens"]["overall"]["mean"] == 3.5 and mos["mos"]["gens"]["overall"]["n"] == 2

    # a sheet with one rated row: a mean, and no interval from one item
    first_row = list(csv.reader(io.StringIO(filled[0].read_text(encoding="utf-8"), newline="")))[1]
    one = _write(tmp_path / "one.csv", header, [first_row])
    r = run_cli("eval", "--mos-ratings", str(one), "--format", "json")
    assert r.returncode == 0, r.stderr
    overall = json.loads(r.stdout)["mos"]["mos"]["gens"]["overall"]
    assert overall["n"] == 1 and overall["mean"] in (5.0, 2.0) and overall["ci_low"] is None


def test_mos_sheet_faults_are_one_line(tmp_path, write_jsonl):
    header, rows = _export(tmp_path, write_jsonl)
    only_header = _write(tmp_path / "header.csv", header, [])
    err = one_error_line(run_cli("eval", "--mos-ratings", str(only_header)))
    assert str(only_header) in err and "no ratings" in err
    col = {h: i for i, h in enumerate(header)}
    rated = [list(r) for r in rows]
    for row in rated:
        row[col["overall"]] = "4"
    gbk = _write(tmp_path / "gbk.csv", header, rated, encoding="gbk")  # as a spreadsheet on a Chinese locale saves it
    err = one_error_line(run_cli("eval", "--mos-ratings", str(gbk)))
    assert f"{gbk}:2: not UTF-8" in err and "UTF-8" in err.split("not UTF-8", 1)[1]
    missing = one_error_line(run_cli("eval", "--mos-ratings", str(tmp_path / "nope.csv")))
    assert "nope.csv" in missing
