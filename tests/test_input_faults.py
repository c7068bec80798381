"""Input faults a user meets: each is one line naming the file (and line) and exit 2, never a traceback.

Found by trying (issue 10): invalid UTF-8 and a UTF-8 BOM in data files, too few ratings for `score`, and model
folders missing their tokenizer or config.json.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, one_error_line, run_cli

from lyrictool.data import load_records
from lyrictool.errors import UserError

DEMO_SONGS = REPO / "lyrictool" / "data" / "demo" / "songs.jsonl"
DEMO_RATINGS = REPO / "lyrictool" / "data" / "demo" / "ratings.jsonl"
SFT = str(REPO / "recipes" / "tiny" / "sft.yaml")
SCORE = str(REPO / "recipes" / "tiny" / "score.yaml")


def test_training_jsonl_with_invalid_utf8_names_the_line(tmp_path):
    lines = DEMO_SONGS.read_bytes().splitlines(keepends=True)[:5]
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(lines[0] + lines[1] + "月光".encode("gbk") + b"\n" + lines[3])
    err = one_error_line(run_cli("sft", SFT, "--dry-run", "--set", f"data.train={bad}",
                                 "--set", f"output_dir={tmp_path / 'out'}"))
    assert f"{bad}:3: not UTF-8" in err


def test_training_jsonl_saved_with_a_bom_is_accepted(tmp_path):
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + DEMO_SONGS.read_bytes())
    r = run_cli("sft", SFT, "--dry-run", "--set", f"data.train={with_bom}", "--set", f"output_dir={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = load_records(str(with_bom))
    assert len(rows) == len(load_records(str(DEMO_SONGS))) and rows[0].data == json.loads(DEMO_SONGS.open().readline())


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_csv_and_json_with_a_bom_are_accepted_and_invalid_utf8_names_the_line(tmp_path, suffix):
    text = 'lyrics,topic\n"月光",故乡\n"晚风",夏天\n' if suffix == ".csv" else \
        '[{"lyrics": "月光", "topic": "故乡"},\n {"lyrics": "晚风", "topic": "夏天"}]'
    good = tmp_path / f"bom{suffix}"
    good.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [r.data["lyrics"] for r in load_records(str(good))] == ["月光", "晚风"]
    assert "lyrics" in load_records(str(good))[0].data  # the first column's name carries no BOM
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(text.replace("晚风", "\udc00").encode("utf-8", "surrogatepass"))
    with pytest.raises(UserError, match=rf"^{bad}:3: not UTF-8" if suffix == ".csv" else rf"^{bad}:2: not UTF-8"):
        load_records(str(bad))


@pytest.mark.parametrize("rows", [1, 2])
def test_score_with_too_few_ratings_is_one_line(tmp_path, rows):
    # one row: no pair at all; two rows of one prompt: one pair, which the held-out split would take
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_bytes(b"".join(DEMO_RATINGS.read_bytes().splitlines(keepends=True)[:rows]))
    err = one_error_line(run_cli("score", SCORE, "--dry-run", "--set", f"data.train={ratings}",
                                 "--set", f"output_dir={tmp_path / 'out'}"))
    assert str(ratings) in err
    assert ("no pairs" in err) if rows == 1 else ("leaves none to train on" in err and "eval_fraction" in err)


@pytest.mark.parametrize("missing", ["tokenizer", "config.json"])
def test_model_folder_missing_a_part_is_one_line(tmp_path, tiny_model_path, missing):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path, folder)
    for f in folder.iterdir():
        if (missing == "tokenizer" and f.name.startswith("tokenizer")) or f.name == missing:
            f.unlink()
    err = one_error_line(run_cli("sft", SFT, "--dry-run", "--set", f"model.name={folder}",
                                 "--set", f"output_dir={tmp_path / 'out'}"))
    assert f"model.name: {folder}" in err and ("no tokenizer" if missing == "tokenizer" else "without config.json") in err
