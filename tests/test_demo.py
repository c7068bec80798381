"""`lyrictool demo`: the recipes it runs are valid, and (slow) the whole chain beats the base model."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


def test_demo_recipes_are_valid_and_chained(tmp_path):
    from lyrictool.demo import STEPS, demo_recipes

    recipes = demo_recipes(tmp_path)
    assert list(recipes) == list(STEPS)
    # each step starts from the previous one's output
    assert recipes["sft"].model.name == str(tmp_path / "inject")
    assert recipes["sft"].data.hints == "line_end"
    assert recipes["rejection-sample"].model.name == str(tmp_path / "sft")
    assert any(r.name == "scorer" and r.path == str(tmp_path / "score") for r in recipes["rejection-sample"].rewards)
    systems = {s.name: s.model.name for s in recipes["eval"].systems}
    assert systems == {"base": "builtin:tiny-zh", "sft": str(tmp_path / "sft"),
                       "final": str(tmp_path / "rejection-sample")}
    assert recipes["eval"].scorer == str(tmp_path / "score")


@pytest.mark.slow
def test_demo_end_to_end_beats_the_base_model(tmp_path):
    r = run_cli("demo", "--output-dir", str(tmp_path / "demo"), timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text(encoding="utf-8"))
    assert summary["beats_base"] == {"rhyme_accuracy": True, "structure_accuracy": True}
    for step in ("inject", "sft", "score", "rejection-sample"):
        assert (tmp_path / "demo" / step / "summary.json").is_file()
    assert (tmp_path / "demo" / "eval" / "report.html").is_file()
    assert "rhyme analysis" in r.stdout and "final model: rhyme_accuracy beats base" in r.stdout
