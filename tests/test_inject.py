"""`lyrictool inject`: recipe checks, dry run, and a tiny three-stage run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe

TRIPLES = [{"subject": f"《影{i}》", "relation": r, "object": o}
           for i in range(6) for r, o in (("导演", f"陈{i}"), ("类型", "科幻" if i % 2 else "喜剧"))]


def recipe_text(kb: Path, songs: Path, out: Path, stages: str | None = None, extra: str = "") -> str:
    stages = stages or f"""
  - name: memorize
    train: {{max_steps: 3, learning_rate: 5.0e-3, per_device_train_batch_size: 8, gradient_checkpointing: false}}
  - name: understand
    train: {{max_steps: 2, learning_rate: 5.0e-3, per_device_train_batch_size: 8, gradient_checkpointing: false}}
  - name: utilize
    data: {{train: {songs}, hints: line_end, eval_fraction: 0.2}}
    train: {{max_steps: 2, learning_rate: 5.0e-3, per_device_train_batch_size: 4, gradient_checkpointing: false}}
    eval_generation: {{num_prompts: 2, max_new_tokens: 16}}"""
    return f"""model: {{name: builtin:tiny-zh}}
knowledge:
  - triples: {kb}
augment: {{paraphrases: 2}}
qa_eval_fraction: 0.34
qa_eval_max: 4
stages:{stages}
output_dir: {out}
seed: 1
{extra}"""


@pytest.fixture()
def kb(write_jsonl):
    return write_jsonl("kb.jsonl", TRIPLES)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_three_stages_each_start_from_the_previous_stage(kb, songs_file, write_recipe, tmp_path, tiny_model_path):
    import torch
    from conftest import run_cli

    from lyrictool.knowledge.evaluate import evaluate_qa
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec
    from lyrictool.train.inject import params_fingerprint

    out = tmp_path / "run"
    r = run_cli("inject", str(write_recipe(recipe_text(kb, songs_file, out))))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))

    stages = summary["stages"]
    assert [s["name"] for s in stages] == ["memorize", "understand", "utilize"]
    dirs = [out / "stage-0-memorize", out / "stage-1-understand", out / "stage-2-utilize"]
    assert [s["dir"] for s in stages] == [str(d) for d in dirs]
    base = params_fingerprint(load_model(ModelSpec(), announce=False).model)
    assert stages[0]["start_fingerprint"] == base
    for prev, cur, d in zip(stages, stages[1:], dirs):
        assert cur["started_from"] == str(d)
        assert cur["start_fingerprint"] == prev["end_fingerprint"] != prev["start_fingerprint"]
    # the saved weights of consecutive stages differ, and the final model is the last stage's
    w = [weights(d) for d in dirs]
    name = "model.embed_tokens.weight"
    assert not torch.equal(w[0][name], w[1][name]) and not torch.equal(w[1][name], w[2][name])
    assert torch.equal(weights(out)[name], w[2][name])
    assert params_fingerprint(load_model(ModelSpec(name=str(dirs[1])), announce=False).model) == \
        stages[1]["end_fingerprint"]

    # per stage: data size, steps, loss, time; knowledge QA after each; generation metrics after utilize
    assert [s["steps"] for s in stages] == [3, 2, 2]
    assert stages[0]["rows"] == 12 and stages[1]["rows"] == 8 and stages[1]["eval_rows"] == 4
    for s in stages:
        assert s["train_loss_first"] > 0 and s["time_s"] > 0 and s["knowledge_qa"]["held_out"]["n"] == 4
    assert "rhyme_accuracy" in stages[2]["generation"]
    assert summary["command"] == "inject" and summary["knowledge"]["questions_held_out"] == 4
    assert (out / "recipe.yaml").exists() and (out / "tokenizer.json").exists()
    held_out = [json.loads(line) for line in (out / "qa_eval.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(held_out) == 4 and {"question", "answer"} <= set(held_out[0])
    # each stage's knowledge QA is what that stage's saved model answers (greedy) to the held-out questions
    for s, d in zip(stages, dirs):
        lm = load_model(ModelSpec(name=str(d)), for_training=False, announce=False)
        assert evaluate_qa(lm.model, lm.tokenizer, held_out)[0] == s["knowledge_qa"]["held_out"]


def test_skipped_and_repeated_stages_and_tensorboard(kb, songs_file, write_recipe, tmp_path, tiny_model_path):
    from lyrictool.train.inject import run_inject

    stages = """
  - name: memorize
    train: {max_steps: 1, per_device_train_batch_size: 4, gradient_checkpointing: false, report_to: tensorboard}
  - name: understand
    skip: true
  - name: memorize
    train: {max_steps: 1, per_device_train_batch_size: 4, gradient_checkpointing: false}"""
    out = tmp_path / "run"
    recipe = load_recipe(write_recipe(recipe_text(kb, songs_file, out, stages, "qa_eval_max: 0")), "inject")
    summary = run_inject(recipe)
    assert [(s["index"], s["name"]) for s in summary["stages"]] == [(0, "memorize"), (2, "memorize")]
    assert summary["stages"][1]["started_from"] == str(out / "stage-0-memorize")
    assert not (out / "stage-1-understand").exists()
    assert list((out / "stage-0-memorize" / "runs").glob("*/events.out.tfevents.*"))  # train.report_to honoured


def test_dry_run_checks_everything_without_a_model(kb, songs_file, write_recipe, tmp_path, capsys):
    from lyrictool.train.inject import run_inject

    out = tmp_path / "run"
    recipe = load_recipe(write_recipe(recipe_text(kb, songs_file, out)), "inject")
    assert run_inject(recipe, dry_run=True) == {}
    printed = capsys.readouterr().out
    assert "0:memorize (12 rows), 1:understand (8 rows), 2:utilize" in printed
    assert not out.exists()


def test_mix_qa_trains_memorize_on_the_texts_and_the_training_questions(kb, songs_file, write_recipe, tmp_path,
                                                                         tiny_model_path, monkeypatch, capsys):
    import lyrictool.training
    from lyrictool.modeling import load_tokenizer
    from lyrictool.train.inject import knowledge_rows, run_inject

    stages = """
  - name: memorize
    mix_qa: true
    train: {max_steps: 2, per_device_train_batch_size: 8, gradient_checkpointing: false}"""
    out = tmp_path / "run"
    recipe = load_recipe(write_recipe(recipe_text(kb, songs_file, out, stages)), "inject")
    assert run_inject(recipe, dry_run=True) == {}
    assert "0:memorize (12 rows + 8 questions mixed in)" in capsys.readouterr().out
    seen = []
    real = lyrictool.training.train_sft

    def recording_train_sft(sft, rows, eval_rows, **kw):
        seen.append(rows)
        return real(sft, rows, eval_rows, **kw)

    monkeypatch.setattr(lyrictool.training, "train_sft", recording_train_sft)
    summary = run_inject(recipe)
    ks, qa_train, qa_eval = knowledge_rows(recipe)
    tok = load_tokenizer("builtin:tiny-zh")
    texts = [r["text"] for r in seen[0]]
    assert summary["stages"][0]["rows"] == len(texts) == len(ks.texts) + len(qa_train) == 20
    assert texts[: len(ks.texts)] == ks.texts
    for row in qa_train:  # each training question with its answer, as the chat template renders the exchange
        assert tok.apply_chat_template([{"role": "user", "content": row["question"]},
                                        {"role": "assistant", "content": row["answer"]}], tokenize=False) in texts
    assert not any(q["question"] in t for q in qa_eval for t in texts)  # held-out questions stay out
    assert summary["stages"][0]["knowledge_qa"]["held_out"]["n"] == 4


@pytest.mark.parametrize("stages, message", [
    ("\n  - name: utilize\n    train: {}", "the utilize stage needs data"),
    ("\n  - name: memorize\n    data: {train: builtin:demo-songs}", "trains on the recipe's knowledge"),
    ("\n  - name: forget", "stages.0.name"),
    ("\n  - name: memorize\n    skip: true", "every stage has skip: true"),
    ("\n  - name: understand\n    mix_qa: true", "mix_qa: only the memorize stage"),
])
def test_recipe_errors_name_the_key(kb, songs_file, write_recipe, tmp_path, stages, message):
    path = write_recipe(recipe_text(kb, songs_file, tmp_path / "o", stages))
    with pytest.raises(UserError) as e:
        load_recipe(path, "inject")
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_knowledge_stages_need_knowledge_and_train_keys_are_checked(kb, songs_file, write_recipe, tmp_path):
    from lyrictool.train.inject import run_inject

    text = recipe_text(kb, songs_file, tmp_path / "o").replace(f"knowledge:\n  - triples: {kb}\n", "")
    with pytest.raises(UserError, match="knowledge: is empty"):
        load_recipe(write_recipe(text), "inject")
    text = recipe_text(kb, songs_file, tmp_path / "o").replace("max_steps: 2, learning_rate", "max_step: 2, learning_rate", 1)
    recipe = load_recipe(write_recipe(text, "r2.yaml"), "inject")
    with pytest.raises(UserError, match=r"stages\[1\] \(understand\): train.max_step: unknown key .*did you mean max_steps"):
        run_inject(recipe, dry_run=True)


def test_bad_knowledge_row_is_reported_with_path_and_line(write_jsonl, songs_file, write_recipe, tmp_path):
    from lyrictool.train.inject import run_inject

    kb = write_jsonl("kb.jsonl", TRIPLES[:2] + [{"subject": "《影9》", "relation": "导演"}])
    recipe = load_recipe(write_recipe(recipe_text(kb, songs_file, tmp_path / "o")), "inject")
    with pytest.raises(UserError, match=rf"^{kb}:3: missing field 'object'"):
        run_inject(recipe, dry_run=True)


def test_tiny_recipe_is_valid(capsys):
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "inject.yaml", "inject")
    assert [s.name for s in recipe.stages] == ["memorize", "understand", "utilize"]
    assert recipe.knowledge[0].builtin == "phonetic"


def test_lora_adapters_are_merged_between_stages(kb, songs_file, write_recipe, tmp_path, tiny_model_path):
    from lyrictool.train.inject import run_inject

    stages = """
  - name: memorize
    train: {max_steps: 1, learning_rate: 1.0e-2, per_device_train_batch_size: 4, gradient_checkpointing: false}
  - name: understand
    train: {max_steps: 1, learning_rate: 1.0e-2, per_device_train_batch_size: 4, gradient_checkpointing: false}"""
    out = tmp_path / "run"
    text = recipe_text(kb, songs_file, out, stages, "qa_eval_max: 0").replace(
        "model: {name: builtin:tiny-zh}", "model: {name: builtin:tiny-zh, lora: {r: 4, alpha: 8}}")
    summary = run_inject(load_recipe(write_recipe(text), "inject"))
    first, second = summary["stages"]
    # plain weights in every stage folder (no adapter left to stack), and the second stage started from them
    assert not (out / "stage-0-memorize" / "adapter_config.json").exists()
    assert (out / "stage-0-memorize" / "model.safetensors").exists() and (out / "model.safetensors").exists()
    assert second["start_fingerprint"] == first["end_fingerprint"] != first["start_fingerprint"]
