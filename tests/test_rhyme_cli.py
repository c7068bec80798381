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
                       "final": "uang", "tone": 1, "group": "江阳", "pattern": "X"}
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


SONG = "[Verse]\n月光洒满窗\n思念我的故乡\n路边一朵花\n何时能回家\n\n[Chorus]\n吹过一阵风\n又是一年春\n天边的彩虹\n温暖我的心\n"


def test_rhyme_labels_each_sections_pattern(tmp_path):
    song = tmp_path / "song.txt"
    song.write_text(SONG, encoding="utf-8")
    out = json.loads(run_cli("rhyme", "--file", str(song), "--format", "json").stdout)
    assert out["strictness"] == "strict"
    assert out["sections"] == [{"section": "verse", "lines": 4, "pattern": "AABB"},
                               {"section": "chorus", "lines": 4, "pattern": "ABAB"}]
    assert [row["pattern"] for row in out["lines"]] == list("AABBABAB")
    # near rhymes: 风/虹 (中东) and 春/心 (人辰) all rhyme together
    out = json.loads(run_cli("rhyme", "--file", str(song), "--format", "json", "--strictness", "near").stdout)
    assert [s["pattern"] for s in out["sections"]] == ["AABB", "AAAA"]
    r = run_cli("rhyme", "--file", str(song))
    assert r.returncode == 0 and "pattern" in r.stdout and "chorus" in r.stdout


def test_rhyme_particles_rhyme_unless_skipped():
    out = json.loads(run_cli("rhyme", "你还爱我吗/回家吧", "--format", "json").stdout)
    assert [(row["char"], row["group"], row["pattern"]) for row in out["lines"]] == [("吗", "发花", "A"),
                                                                                    ("吧", "发花", "A")]
    out = json.loads(run_cli("rhyme", "你还爱我吗/回家吧", "--format", "json", "--skip-particles").stdout)
    assert [(row["char"], row["group"]) for row in out["lines"]] == [("我", "梭波"), ("家", "发花")]


def test_rhyme_user_errors_exit_2(tmp_path):
    r = run_cli("rhyme")
    assert r.returncode == 2 and "no lyrics" in r.stderr
    r = run_cli("rhyme", "月光", "--scheme", "pingshui")
    assert r.returncode == 2 and "unknown rhyme scheme 'pingshui'" in r.stderr
    r = run_cli("rhyme", "月光", "--strictness", "loose")
    assert r.returncode == 2 and "unknown rhyme strictness 'loose'" in r.stderr
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
