"""`lyrictool rhyme`: per-line syllable, final, tone, group as a table or JSON."""

from __future__ import annotations

import json

from conftest import run_cli


def test_rhyme_json_from_text_with_slashes():
    r = run_cli("rhyme", "月光洒满窗/这种感觉/路边的花儿/I love you", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["scheme"] == "shisanzhe"
    rows = out["lines"]
    assert [row["line"] for row in rows] == ["月光洒满窗", "这种感觉", "路边的花儿", "I love you"]
    assert rows[0] == {"section": None, "line": "月光洒满窗", "char": "窗", "pinyin": "chuāng",
                       "final": "uang", "tone": 1, "group": "江阳"}
    assert (rows[1]["pinyin"], rows[1]["group"]) == ("jué", "乜斜")  # read in context
    assert (rows[2]["char"], rows[2]["group"]) == ("花儿", "发花")
    assert rows[3]["group"] is None and rows[3]["char"] is None


def test_rhyme_table_from_file_with_sections(tmp_path):
    song = tmp_path / "song.txt"
    song.write_text("[Verse 1]\n我不知\n相思无处寄\n\n[Chorus]\n吹过一阵风\n", encoding="utf-8")
    r = run_cli("rhyme", "--file", str(song), "--scheme", "zhonghua_xinyun")
    assert r.returncode == 0, r.stderr
    for expected in ("知", "zhī", "-i", "支", "寄", "齐", "风", "庚"):
        assert expected in r.stdout
    assert "[Verse 1]" not in r.stdout  # tags are not lyric lines

    r = run_cli("rhyme", "--file", str(song), "--format", "json")
    rows = json.loads(r.stdout)["lines"]
    assert [row["section"] for row in rows] == ["verse", "verse", "chorus"]
    assert [row["group"] for row in rows] == ["一七", "一七", "中东"]


def test_rhyme_user_errors_exit_2(tmp_path):
    r = run_cli("rhyme")
    assert r.returncode == 2 and "no lyrics" in r.stderr
    r = run_cli("rhyme", "月光", "--scheme", "pingshui")
    assert r.returncode == 2 and "unknown rhyme scheme 'pingshui'" in r.stderr
    r = run_cli("rhyme", "月光", "--format", "xml")
    assert r.returncode == 2 and "--format" in r.stderr
    r = run_cli("rhyme", "--file", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "missing.txt: no such file" in r.stderr
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    r = run_cli("rhyme", "--file", str(bad))
    assert r.returncode == 2 and "not UTF-8" in r.stderr
    r = run_cli("rhyme", "月光", "--file", str(bad))
    assert r.returncode == 2 and "not both" in r.stderr
