"""`lyrictool eval`: model and file systems, side-by-side comparison, JSON contract, dry run, errors."""

from __future__ import annotations

import json
import random

import pytest
from conftest import REPO, run_cli
from typer.testing import CliRunner

from lyrictool.cli import app
from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe

DEMO = REPO / "lyrictool" / "data" / "demo" / "songs.jsonl"


@pytest.fixture()
def good_bad(tmp_path):
    """The demo songs with their full controls (good) and the same controls answered by other songs (bad)."""
    from lyrictool.controls import derive_controls

    rows = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()[:40]]
    rng = random.Random(0)
    good, bad = [], []
    for r in rows:
        controls = {**r["controls"], **derive_controls(r["lyrics"], ["structure", "line_lengths"])}
        good.append({"id": r["id"], "controls": controls, "lyrics": r["lyrics"]})
        bad.append({"id": r["id"], "controls": controls, "lyrics": rows[rng.randrange(len(rows))]["lyrics"]})
    rng.shuffle(bad)  # a different order: songs pair by id, not by position
    paths = []
    for name, data in (("bad", bad), ("good", good)):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in data), encoding="utf-8")
        paths.append(p)
    return paths


def test_two_inputs_are_compared_side_by_side(good_bad, tmp_path):
    bad, good = good_bad
    out = tmp_path / "result.json"
    res = CliRunner().invoke(app, ["eval", "--input", str(bad), "--input", str(good), "--format", "json",
                                   "--output", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text(encoding="utf-8"))
    assert list(result["systems"]) == ["bad", "good"]
    assert result["metrics"] == result["systems"]["bad"]["metrics"]  # top-level metrics = first system
    for key in ("n", "rhyme_accuracy", "rhyme_density", "structure_accuracy", "line_length_accuracy",
                "format_validity"):
        assert key in result["metrics"]
    (pair,) = result["comparison"]["pairs"]
    assert (pair["a"], pair["b"]) == ("bad", "good")
    for metric in ("rhyme_accuracy", "structure_accuracy", "line_length_accuracy"):
        assert pair["metrics"][metric]["significant"] and pair["metrics"][metric]["ci_low"] > 0
    assert not pair["metrics"]["format_validity"]["significant"]
    assert pair["metrics"]["rhyme_accuracy"]["n"] == 40  # paired by id despite the shuffled order


def test_table_output_shows_differences(good_bad):
    bad, good = good_bad
    res = CliRunner().invoke(app, ["eval", "--input", str(bad), "--input", str(good)])
    assert res.exit_code == 0, res.output
    assert "good − bad" in res.output and "rhyme_accuracy" in res.output


def test_unpairable_inputs_are_scored_but_not_compared(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text('{"lyrics": "月光照在小村庄\\n晚风吹过稻花香"}\n', encoding="utf-8")
    b.write_text('{"lyrics": "一"}\n{"lyrics": "二"}\n', encoding="utf-8")
    from lyrictool.commands.eval import run_eval

    result = run_eval(None, [a, b], fmt="json")
    assert "different numbers of songs" in result["comparison"]["skipped"]
    assert result["systems"]["b"]["n"] == 2


def test_bad_row_in_a_compared_file_names_its_line(good_bad, tmp_path):
    bad, _ = good_bad
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"lyrics": "好"}\n{"lyric": "typo"}\n', encoding="utf-8")
    r = run_cli("eval", "--input", str(bad), "--input", str(broken))
    assert r.returncode == 2
    assert f"{broken}:2: missing \"lyrics\"" in r.stderr
    ok = run_cli("eval", "--input", str(broken), "--input", str(broken), "--skip-invalid", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["systems"]["broken"]["invalid_rows"] == 1


def test_nothing_to_evaluate_is_a_user_error():
    from lyrictool.commands.eval import run_eval

    with pytest.raises(UserError, match="nothing to evaluate"):
        run_eval(None, [])


def _recipe(tmp_path, body: str):
    p = tmp_path / "eval.yaml"
    p.write_text(body, encoding="utf-8")
    return p


def test_recipe_errors_name_the_key(tmp_path):
    p = _recipe(tmp_path, "systems:\n  - {name: a, model: builtin:tiny-zh, generations: x.jsonl}\n")
    with pytest.raises(UserError, match="exactly one of model"):
        load_recipe(p, "eval")
    p = _recipe(tmp_path, "systems:\n  - {name: a, model: builtin:tiny-zh}\n  - {name: a, model: builtin:tiny-zh}\n")
    with pytest.raises(UserError, match="duplicate name"):
        load_recipe(p, "eval")
    p = _recipe(tmp_path, "systems:\n  - {name: a, model: builtin:tiny-zh}\nbootstrap: 5\n")
    with pytest.raises(UserError, match="bootstrap: unknown key; did you mean bootstrap_resamples"):
        load_recipe(p, "eval")


def test_shipped_eval_recipes_validate(tmp_path):
    for path in ("recipes/tiny/eval.yaml", "recipes/eval.yaml"):
        assert load_recipe(REPO / path, "eval").systems
    # dry run: every prompt row checked, models resolved, nothing generated
    text = (REPO / "recipes/tiny/eval.yaml").read_text(encoding="utf-8").replace("runs/tiny-sft", "builtin:tiny-zh")
    p = _recipe(tmp_path, text)
    r = run_cli("eval", str(p), "--dry-run", "--set", "scorer=null")
    assert r.returncode == 0, r.stderr
    assert "recipe OK" in r.stdout and "prompts: 42" in r.stdout and "nothing written" in r.stdout


def test_models_generate_on_the_same_prompts_and_are_compared(tmp_path, tiny_model_path, good_bad):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "controls": {"rhyme": "江阳", "structure": [
        {"section": "verse", "lines": 2}]}}, ensure_ascii=False) + "\n" for i in range(6)), encoding="utf-8")
    # an untrained scorer head on the tiny model: enough to check the scorer and QA plumbing
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = tmp_path / "scorer"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1).save_pretrained(scorer)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(scorer)
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "香押什么辙？", "answer": "江阳"}\n{"question": "花押什么辙？", "answer": "发花"}\n',
                  encoding="utf-8")
    p = _recipe(tmp_path, f"""
systems:
  - {{name: base, model: builtin:tiny-zh}}
  - {{name: again, model: {{name: builtin:tiny-zh, dtype: fp32}}}}
prompts: {prompts}
generation: {{num_prompts: 4, max_new_tokens: 24, batch_size: 4}}
scorer: {scorer}
knowledge_qa: {qa}
bootstrap_resamples: 200
output_dir: {tmp_path / 'out'}
""")
    report = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["eval", str(p), "--format", "json", "--report", str(report)])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["systems"]["base"]["n"] == 4
    gens = [json.loads(x) for x in (tmp_path / "out" / "generations" / "base.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "out" / "generations" / "again.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gens] == ["p0", "p1", "p2", "p3"]
    # fixed seed: the same model gives the same songs, so no difference is detected
    assert [g["lyrics"] for g in gens] == [g["lyrics"] for g in again]
    (pair,) = result["comparison"]["pairs"]
    assert not any(m["significant"] for m in pair["metrics"].values())
    assert result["systems"]["base"]["scorer"]["n"] == 4 and "score" in gens[0]
    (wins,) = result["comparison"]["win_rates"]
    assert wins["ties"] == 4 and wins["win_rate"] == 0.5  # same songs, same scores
    # the knowledge score is what the base model answers (greedy) to those two questions
    from lyrictool.knowledge.evaluate import evaluate_qa
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    lm = load_model(ModelSpec(), for_training=False, announce=False)
    rows = [json.loads(line) for line in qa.read_text(encoding="utf-8").splitlines()]
    assert result["systems"]["base"]["knowledge"] == evaluate_qa(lm.model, lm.tokenizer, rows)[0]
    assert report.is_file()


def test_a_killed_eval_resumes_from_its_part_files(tmp_path, monkeypatch):
    """Songs already in a part file (a run killed after them, its last line torn) are not sampled again; the rest
    are, and the parts are gone once the generations file is written."""
    from lyrictool.eval import systems as eval_systems
    from lyrictool.recipes import load_recipe

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "controls": {"rhyme": "江阳"}}, ensure_ascii=False) + "\n"
                               for i in range(5)), encoding="utf-8")
    text = f"""
systems:
  - {{name: base, model: builtin:tiny-zh}}
prompts: {prompts}
generation: {{num_prompts: 5, max_new_tokens: 12, batch_size: 2}}
bootstrap_resamples: 200
output_dir: {tmp_path / 'out'}
"""
    p = _recipe(tmp_path, text)
    recipe = load_recipe(p, "eval")
    rows = eval_systems.load_prompts(str(prompts), 5)
    key = eval_systems.part_key(recipe.systems[0], rows, recipe.generation, recipe.seed)
    parts = tmp_path / "out" / eval_systems.PARTS_DIR
    parts.mkdir(parents=True)
    (parts / f"base-{key}.rank0.jsonl").write_text(
        '{"index": 0, "id": "p0", "lyrics": "已有一"}\n{"index": 3, "id": "p3", "lyrics": "已有四"}\n{"index": 1, "id',
        encoding="utf-8")
    (parts / "base-0123456789ab.rank0.jsonl").write_text(  # other settings: not resumed from
        '{"index": 2, "id": "p2", "lyrics": "旧设置"}\n', encoding="utf-8")
    asked: list[list[int]] = []
    from lyrictool import generation

    real = generation.sample_lyrics

    def spy(sampler, controls, **kw):
        asked.append(list(kw["indices"]))
        return real(sampler, controls, **kw)

    monkeypatch.setattr(generation, "sample_lyrics", spy)
    res = CliRunner().invoke(app, ["eval", str(p), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert asked == [[1, 2, 4]]  # the torn line's prompt is sampled again, with the ones never done
    gens = [json.loads(x) for x in (tmp_path / "out" / "generations" / "base.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gens] == ["p0", "p1", "p2", "p3", "p4"]
    assert gens[0]["lyrics"] == "已有一" and gens[3]["lyrics"] == "已有四" and gens[2]["lyrics"] != "旧设置"
    assert not parts.exists()
