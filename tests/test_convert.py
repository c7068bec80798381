"""`lyrictool data chinese-poetry` on the shared chinese-poetry files (宋词, 元曲, 诗经)."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA
from typer.testing import CliRunner

from lyrictool.cli import app, main
from lyrictool.data import load_records
from lyrictool.data.convert import convert_chinese_poetry, iter_chinese_poetry
from lyrictool.data.lyrics_rows import lyrics_example
from lyrictool.errors import UserError
from lyrictool.lyrics import parse

SONGCI = SHARED_DATA / "songci" / "ci.song.0.json"
needs_data = pytest.mark.skipif(not SONGCI.exists(), reason="shared chinese-poetry data not present")


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@needs_data
def test_songci_tune_becomes_title_and_paragraphs_become_lines(tmp_path):
    out = tmp_path / "ci.jsonl"
    stats = convert_chinese_poetry(SONGCI, out)
    source = json.loads(SONGCI.read_text(encoding="utf-8"))
    rows = read_rows(out)
    assert stats["written"] == len(rows) and stats["written"] + stats["skipped"] + stats["duplicates"] == len(source)
    first = rows[0]
    assert first["controls"] == {"genre": "宋词", "title": source[0]["rhythmic"]}
    assert first["author"] == source[0]["author"]
    assert parse(first["lyrics"]).lines == [p.strip() for p in source[0]["paragraphs"]]
    assert all("□" not in r["lyrics"] for r in rows)
    # every row is a valid lyrics row for training
    for rec in load_records(str(out)):
        lyrics_example(rec)


@needs_data
def test_folder_conversion_with_limit_via_cli(tmp_path):
    out = tmp_path / "ci.jsonl"
    result = CliRunner().invoke(app, ["data", "chinese-poetry", str(SHARED_DATA / "songci"), "-o", str(out),
                                      "--limit", "50"])
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == 50


@needs_data
def test_yuanqu_and_shijing_keep_titles_and_stanzas(tmp_path):
    out = tmp_path / "yq.jsonl"
    convert_chinese_poetry(SHARED_DATA / "yuanqu" / "yuanqu.json", out, limit=3)
    row = read_rows(out)[0]
    assert row["controls"]["genre"] == "元曲" and row["controls"]["title"]
    out = tmp_path / "sj.jsonl"
    convert_chinese_poetry(SHARED_DATA / "shijing", out, limit=1)
    doc = parse(read_rows(out)[0]["lyrics"])
    assert read_rows(out)[0]["controls"] == {"genre": "诗经", "title": "关雎"}
    assert len(doc.sections) == 5 and all(s.name == "verse" for s in doc.sections)
    assert doc.sections[0].lines == ["关关雎鸠，在河之洲。", "窈窕淑女，君子好逑。"]


def test_lost_characters_and_notes(tmp_path):
    src = tmp_path / "ci.song.x.json"
    src.write_text(json.dumps([
        {"author": "甲", "paragraphs": ["春风□□。", "花落。"], "rhythmic": "如梦令"},
        {"author": "乙", "paragraphs": ["春风十里（一作千里）。", "花落知多少。"], "rhythmic": "如梦令"},
        {"author": "乙", "paragraphs": ["春风十里（一作千里）。", "花落知多少。"], "rhythmic": "如梦令"},
    ], ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert convert_chinese_poetry(src, out) == {"written": 1, "skipped": 1, "duplicates": 1}
    assert read_rows(out)[0]["lyrics"] == "春风十里。\n花落知多少。"


def test_bad_inputs_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"author": "甲"}]', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.json\[0\]: not a chinese-poetry poem"):
        list(iter_chinese_poetry(bad))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"paragraphs": ]', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken.json:2: not valid JSON"):
        list(iter_chinese_poetry(broken))
    with pytest.raises(SystemExit) as e:
        main(["data", "chinese-poetry", str(tmp_path / "nope"), "-o", str(tmp_path / "o.jsonl")])
    assert e.value.code == 2
    assert "nope: no such file or folder" in capsys.readouterr().err
