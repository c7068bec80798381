"""`lyrictool demo`: the recipes it runs are valid, and (slow) the whole chain beats the base model."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli


def test_demo_recipes_are_valid_and_chained(tmp_path):
    from lyrictool.demo import STEPS, demo_recipes

    recipes = demo_recipes(tmp_path)
    assert list(recipes) == list(STEPS)
    # each step starts from the previous one's output; the first ones and the base system from the demo's base model
    assert recipes["inject"].model.name == recipes["score"].model.name == str(tmp_path / "base")
    assert recipes["sft"].model.name == str(tmp_path / "inject")
    assert recipes["sft"].data.hints == "line_end"
    assert recipes["rejection-sample"].model.name == str(tmp_path / "sft")
    assert any(r.name == "scorer" and r.path == str(tmp_path / "score") for r in recipes["rejection-sample"].rewards)
    systems = {s.name: s.model.name for s in recipes["eval"].systems}
    assert systems == {"base": str(tmp_path / "base"), "sft": str(tmp_path / "sft"),
                       "final": str(tmp_path / "rejection-sample")}
    assert recipes["eval"].scorer == str(tmp_path / "score")
    assert recipes["eval"].fluency is None  # perplexity under a random-init base model would measure nothing


def test_pretrained_demo_scores_fluency_under_the_base_model_as_given(tmp_path):
    from lyrictool.demo import demo_recipes

    recipe = demo_recipes(tmp_path, model="builtin:tiny-zh")["eval"]
    assert recipe.fluency_model().name == recipe.systems[0].model.name == "builtin:tiny-zh"
    assert recipe.fluency_model().lora is None  # the base as given, frozen; the systems it scores are LoRA-trained


@pytest.mark.parametrize("repeated, ratio, holds", [
    (0.05, (1.02, 0.95, 1.09), {"repeated_lines": True, "perplexity": True}),
    (0.06, (1.02, 0.95, 1.10), {"repeated_lines": False, "perplexity": False}),
    (-0.2, None, {"repeated_lines": True, "perplexity": None}),
])
def test_fluency_verdict_checks_the_target_against_sft(repeated, ratio, holds):
    """The fluency target: repeated lines final − sft at most +0.05, and the upper CI end of the perplexity ratio
    final / sft below 1.10; the verdict says which part holds, and that perplexity was not measured without one."""
    from lyrictool.demo import fluency_verdict

    vs_sft = {"repeated_lines": {"diff": repeated, "ci_low": repeated - 0.1, "ci_high": repeated + 0.1}}
    if ratio:
        vs_sft["perplexity"] = dict(zip(("ratio", "ci_low", "ci_high"), ratio))
    got, line = fluency_verdict(vs_sft)
    assert got == holds
    assert line.count("does NOT hold") == list(holds.values()).count(False)
    assert ("perplexity: not measured" in line) == (ratio is None)


def test_demo_base_model_knows_every_character_the_demo_uses(tmp_path):
    """The base model's vocabulary is cut to the demo's characters: every prompt and target any step renders must
    still tokenize without <|unk|>, or a step would silently train on unknown tokens."""
    from lyrictool.builtin_models import build_tiny_tokenizer, tiny_vocab, tiny_vocab_for
    from lyrictool.controls import build_prompt, derive_controls
    from lyrictool.data import load_records
    from lyrictool.demo import demo_recipes, demo_texts
    from lyrictool.lyrics import add_hints

    recipes = demo_recipes(tmp_path)
    vocab = tiny_vocab_for(demo_texts(recipes))
    assert 500 < len(vocab) < len(tiny_vocab()) / 3
    tok = build_tiny_tokenizer(vocab)
    rendered = []
    for source in ("builtin:demo-songs", "builtin:demo-ratings"):  # sft, rejection sampling, scorer
        for rec in load_records(source):
            lyrics = rec.data["lyrics"]
            controls = {**rec.data["controls"], **derive_controls(lyrics, ["rhyme", "structure", "line_lengths"])}
            rendered.append(build_prompt(controls) + add_hints(lyrics, "line_end"))
    for rec in load_records("builtin:eval-prompts"):
        rendered.append(build_prompt(rec.data["controls"]))
    for text in rendered:
        chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
        assert tok.unk_token_id not in tok(chat)["input_ids"], text


def test_quick_demo_runs_every_step_and_prints_the_closing_screen(tmp_path):
    r = run_cli("demo", "--quick", "--output-dir", str(tmp_path / "demo"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text(encoding="utf-8"))
    assert list(summary["timings"]) == ["base", "inject", "sft", "score", "rejection-sample", "eval"]
    for step, t in summary["timings"].items():
        assert t["wall_s"] >= 0 and t["cpu_s"] >= 0, step
    assert summary["timings"]["sft"]["phases"]["train"]["cpu_s"] > 0  # each step's own phases, in CPU seconds too
    assert summary["torch_import"]["wall_s"] > 0
    if "OMP_NUM_THREADS" not in os.environ:
        assert summary["torch_threads"] == 1
    assert set(summary["final_minus_base"]) >= {"rhyme_accuracy", "structure_accuracy"}
    assert {"diff", "ci_low", "ci_high"} <= set(summary["final_minus_sft"]["line_length_accuracy"])
    assert {"diff", "ci_low", "ci_high"} <= set(summary["final_minus_sft"]["repeated_lines"])
    assert summary["fluency_target"]["holds"]["perplexity"] is None and summary["perplexity"] is None
    for text in ("rhyme analysis", "time per step", "final − sft", "import torch", "repeated_lines",
                 "fluency no worse than sft: repeated lines final − sft", "perplexity: not measured"):
        assert text in r.stdout, text


@pytest.mark.slow
def test_demo_end_to_end_shows_rhyme_control(tmp_path):
    """The full demo (minutes): the final model rhymes as asked, and each claim holds with its 95% CI."""
    r = run_cli("demo", "--output-dir", str(tmp_path / "demo"), timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text(encoding="utf-8"))
    assert summary["beats_base"] == {"rhyme_accuracy": True, "structure_accuracy": True}
    assert summary["metrics"]["final"]["rhyme_accuracy"] >= 0.5
    for metric in ("rhyme_accuracy", "structure_accuracy"):
        assert summary["final_minus_base"][metric]["ci_low"] > 0, metric
    for metric in ("rhyme_accuracy", "structure_accuracy", "line_length_accuracy"):
        assert summary["final_minus_sft"][metric]["ci_high"] > 0, metric  # rejection sampling does not hurt
    for step in ("inject", "sft", "score", "rejection-sample"):
        assert (tmp_path / "demo" / step / "summary.json").is_file()
    assert (tmp_path / "demo" / "eval" / "report.html").is_file()
    assert "rhyme analysis" in r.stdout and "final model: rhyme_accuracy beats base" in r.stdout
