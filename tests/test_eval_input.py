"""`eval --input`: scoring an existing generations JSONL without a model."""

from __future__ import annotations

import json

import pytest

from lyrictool.commands.eval import run_eval_input
from lyrictool.errors import UserError
from lyrictool.eval.input import score_file

SONG = "[Verse]\n月光洒满窗\n思念我的故乡\n\n[Chorus]\n吹过一阵风\n天边的彩虹"
CONTROLS = {
    "rhyme": "江阳",
    "scheme": "AABB",
    "structure": [{"section": "verse", "lines": 2}, {"section": "chorus", "lines": 2}],
    "line_lengths": [5, 6, 5, 5],
}


def test_scores_rows_with_and_without_controls(write_jsonl, capsys):
    path = write_jsonl("gen.jsonl", [
        {"lyrics": SONG, "controls": CONTROLS, "model": "a"},
        {"lyrics": SONG},
        {"lyrics": SONG, "controls": None},
    ])
    result = run_eval_input(str(path), "json", None, False, "shisanzhe")
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    m = result["metrics"]
    assert m["n"] == 3 and result["invalid_rows"] == 0
    assert m["rhyme_accuracy"] == 1.0 and m["n_rhyme_accuracy"] == 1  # A = 江阳 as asked, B = 中东
    assert m["structure_accuracy"] == 1.0 and m["line_length_accuracy"] == 1.0
    assert m["rhyme_density"] == 1.0 and m["n_rhyme_density"] == 3  # rows without controls count
    assert m["format_validity"] == 1.0


def test_table_output_and_output_file(write_jsonl, tmp_path, capsys):
    path = write_jsonl("gen.jsonl", [{"lyrics": SONG, "controls": CONTROLS}])
    out = tmp_path / "res" / "metrics.json"
    run_eval_input(str(path), "table", str(out), False, "shisanzhe")
    shown = capsys.readouterr().out
    assert "rhyme_accuracy" in shown and "format_validity" in shown and "scored 1 songs" in shown
    assert json.loads(out.read_text(encoding="utf-8"))["metrics"]["n"] == 1


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "a row must be a JSON object"),
        ('{"text": "x"}', 'missing "lyrics"'),
        ('{"lyrics": 3}', '"lyrics" must be a string'),
        ('{"lyrics": "x", "controls": [1]}', '"controls" must be an object'),
        ('{"lyrics": "x", "controls": {"rhyme": "平水"}}', "controls.rhyme: unknown rhyme"),
        ('{"lyrics": "x", "controls": {"line_lengths": "5,5"}}', "controls.line_lengths"),
        ('{"lyrics": "x", "controls": {"structure": [{"lines": 2}]}}', "controls.structure"),
    ],
)
def test_malformed_rows_name_path_and_line(write_jsonl, raw, reason):
    path = write_jsonl("gen.jsonl", [{"lyrics": SONG}], raw_lines=["", raw])
    with pytest.raises(UserError) as e:
        run_eval_input(str(path), "json", None, False, "shisanzhe")
    assert str(e.value).startswith(f"{path}:3: ")  # row 1 ok, line 2 blank, line 3 bad
    assert reason in str(e.value)


def test_skip_invalid_counts_rows(write_jsonl, capsys):
    path = write_jsonl("gen.jsonl", [{"lyrics": SONG}, {"lyrics": SONG}], raw_lines=["{bad", '{"x": 1}'])
    result = run_eval_input(str(path), "json", None, True, "shisanzhe")
    assert result["metrics"]["n"] == 2 and result["invalid_rows"] == 2
    assert result["invalid_examples"][0].startswith(f"{path}:3: not valid JSON")


def test_rhyme_control_under_another_scheme(write_jsonl, capsys):
    path = write_jsonl("gen.jsonl", [{"lyrics": "月光洒满窗\n思念我的故乡", "controls": {"rhyme": "江阳"}}])
    result = run_eval_input(str(path), "json", None, False, "zhonghua_xinyun")
    assert result["metrics"]["rhyme_accuracy"] == 1.0  # 江阳 is 唐 in 中华新韵


def test_user_errors(tmp_path, write_jsonl):
    with pytest.raises(UserError, match="no such file"):
        run_eval_input(str(tmp_path / "nope.jsonl"), "json", None, False, "shisanzhe")
    path = write_jsonl("gen.jsonl", [{"lyrics": SONG}])
    with pytest.raises(UserError, match="--format"):
        run_eval_input(str(path), "yaml", None, False, "shisanzhe")
    with pytest.raises(UserError, match="unknown rhyme scheme"):
        run_eval_input(str(path), "json", None, False, "pingshui")


def test_progress_bar_path_scores_the_same(write_jsonl):
    path = write_jsonl("gen.jsonl", [{"lyrics": SONG, "controls": CONTROLS}] * 300)
    with_bar, _ = score_file(str(path), progress=True)
    without, _ = score_file(str(path), progress=False)
    assert with_bar == without and len(with_bar) == 300


def test_cli_eval_input_json_and_exit_codes(write_jsonl, tmp_path):
    from conftest import run_cli

    good = write_jsonl("gen.jsonl", [{"lyrics": SONG, "controls": CONTROLS}, {"lyrics": SONG}])
    r = run_cli("eval", "--input", str(good), "--format", "json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["n"] == 2 and metrics["structure_accuracy"] == 1.0

    bad = write_jsonl("bad.jsonl", [{"lyrics": SONG}], raw_lines=['{"lyrics": "x", "controls": "AABB"}'])
    r = run_cli("eval", "--input", str(bad))
    assert r.returncode == 2
    assert f"{bad}:2: " in r.stderr and '"controls" must be an object' in r.stderr
    r = run_cli("eval", "--input", str(bad), "--skip-invalid", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["invalid_rows"] == 1
