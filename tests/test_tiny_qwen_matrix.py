"""Every tiny recipe on builtin:tiny-qwen (Qwen2 architecture, the real Qwen2.5 byte-level BPE tokenizer and chat
template), through the CLI: sft (full and LoRA), inject, score, rejection-sample, dpo, ppo (GRPO and RLOO), eval,
and serve answered by the official openai client.

Each command runs as a user runs it (``lyrictool <command> recipes/tiny/<command>.yaml --set model.name=...``),
in this process through ``lyrictool.cli.main`` (the console script's entry point; a fresh interpreter per command
would add seconds of imports each), with a couple of steps and small batches; serve is a real uvicorn process.
Commands chain as in the docs: rejection-sample starts from the LoRA sft adapter folder, dpo from rejection-sample's
output, ppo and eval from the full sft model, eval scores with the trained scorer.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # single-threaded: 88 CPU-s for the matrix, 147 with two

QWEN = "builtin:tiny-qwen"
STEPS = ["--set", "train.max_steps=2", "--set", "train.per_device_train_batch_size=2", "--set", "train.logging_steps=1"]
LORA = ["--set", "model.lora={r: 4, alpha: 8}"]
SMALL_GEN = ["--set", "eval_generation={num_prompts: 1, max_new_tokens: 8}"]


def lyrictool(*args: str) -> None:
    """``lyrictool ARGS`` in this process; a failure raises with its traceback (--debug)."""
    from lyrictool.cli import main

    try:
        main([*args, "--debug"])
    except SystemExit as e:  # only a non-zero exit raises
        pytest.fail(f"lyrictool {' '.join(args)} exited {e.code}")


def summary(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert s["world_size"] == 1 and s["versions"]["transformers"]
    return s


def assert_qwen_model_generates(folder: Path, *, adapter: bool = False) -> None:
    """The output folder loads as a Qwen2 model with the Qwen2.5 tokenizer and chat template, and writes text."""
    from lyrictool.generation import chat_prompt, generate_texts
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    assert (folder / "adapter_config.json").exists() == adapter
    assert (folder / "config.json").exists() != adapter
    lm = load_model(ModelSpec(name=str(folder)), for_training=False, announce=False)
    assert lm.model.config.model_type == "qwen2" and type(lm.tokenizer).__name__ == "Qwen2Tokenizer"
    assert lm.tokenizer("村庄", add_special_tokens=False)["input_ids"] == [106950]
    prompt = chat_prompt(lm.tokenizer, "写一首歌")
    assert prompt.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    (samples,) = generate_texts(lm.model, lm.tokenizer, [prompt], n=2, max_new_tokens=6, seed=0)
    assert all(0 < s.new_tokens <= 6 and s.raw for s in samples)


@contextlib.contextmanager
def serving(args: list[str], log: Path):
    """``lyrictool serve ARGS`` as a real uvicorn process on a free loopback port; yields its base URL."""
    from serve_helpers import free_port, start_serve

    port = free_port()
    proc = start_serve(args, port, log, cwd=REPO)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("qwen-runs")


@pytest.fixture(scope="module")
def sft_runs(runs) -> dict[str, Path]:
    out = {}
    for kind, extra in (("full", []), ("lora", LORA)):
        out[kind] = runs / f"sft-{kind}"
        lyrictool("sft", "recipes/tiny/sft.yaml", "--set", f"model.name={QWEN}", *STEPS, *extra,
                  "--set", "data.max_rows=8", "--set", "data.eval_fraction=0.25", *SMALL_GEN,
                  "--set", f"output_dir={out[kind]}")
    return out


@pytest.fixture(scope="module")
def scorer(runs) -> Path:
    out = runs / "score"
    lyrictool("score", "recipes/tiny/score.yaml", "--set", f"model.name={QWEN}", *STEPS, "--set", "train.max_length=160",
              "--set", "data.max_rows=12", "--set", f"output_dir={out}")
    return out


@pytest.fixture(scope="module")
def rejection_sample(runs, sft_runs) -> Path:
    out = runs / "rejection-sample"
    lyrictool("rejection-sample", "recipes/tiny/rejection-sample.yaml", "--set", f"model.name={sft_runs['lora']}",
              *LORA, *STEPS, "--set", "data.max_rows=2", "--set", "sampling.k=2", "--set", "sampling.max_new_tokens=8",
              "--set", "rounds=1", "--set", f"output_dir={out}")
    return out


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_sft(sft_runs, kind):
    folder = sft_runs[kind]
    s = summary(folder)
    m = s["metrics"]
    assert s["command"] == "sft" and m["global_step"] == 2 and s["model"]["lora"] == (kind == "lora")
    assert 10 < m["train_loss_first"] < 13  # ~ln(151,646) = 11.9: a random model over Qwen's whole vocabulary
    assert m["eval_loss"] > 0 and m["generation"]["n"] == 1
    assert s["data"]["rows"] == 6
    assert_qwen_model_generates(folder, adapter=kind == "lora")


def test_inject(runs):
    out = runs / "inject"
    stage = {"max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1}
    lyrictool("inject", "recipes/tiny/inject.yaml", "--set", f"model.name={QWEN}", "--set", "knowledge.0.max_chars=4",
              "--set", "augment.paraphrases=1", "--set", "qa_eval_max=2",
              *[x for i in range(3) for x in ("--set", f"stages.{i}.train={json.dumps(stage)}")],
              "--set", "stages.2.data.max_rows=4", "--set", "stages.2.eval_generation={num_prompts: 1, max_new_tokens: 8}",
              "--set", f"output_dir={out}")
    s = summary(out)
    assert [st["name"] for st in s["stages"]] == ["memorize", "understand", "utilize"]
    assert [st["steps"] for st in s["stages"]] == [1, 1, 1]
    # each stage starts from the previous one's saved model
    assert s["stages"][0]["started_from"] == QWEN
    assert [st["started_from"] for st in s["stages"][1:]] == [st["dir"] for st in s["stages"][:-1]]
    assert all(st["knowledge_qa"]["held_out"]["n"] == 2 for st in s["stages"])
    assert_qwen_model_generates(out)


def test_score(scorer):
    from lyrictool.rewards import Scorer

    s = summary(scorer)
    assert s["command"] == "score" and s["metrics"]["global_step"] == 2
    assert 0.0 <= s["metrics"]["pairwise_accuracy_before"] <= 1 and 0.0 <= s["metrics"]["pairwise_accuracy"] <= 1
    assert s["data"]["pairs_eval"] > 0
    scores = Scorer(str(scorer), batch_size=2).score([{"topic": "夏天"}] * 2, ["[Verse]\n月光洒满小村庄", "村庄"])
    assert len(scores) == 2 and all(isinstance(x, float) for x in scores)


def test_rejection_sample_from_a_lora_sft_output(rejection_sample):
    s = summary(rejection_sample)
    assert (rejection_sample / "policy-merged" / "config.json").exists()  # the adapter folder, merged once
    rows = [json.loads(line) for line in (rejection_sample / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["candidates"]) == 2 for r in rows)
    assert all(0 < c["new_tokens"] <= 8 for r in rows for c in r["candidates"])
    assert s["metrics"]["rounds"][0]["finetune"]["global_step"] == 2
    assert_qwen_model_generates(rejection_sample)  # saved merged: a full model


def test_dpo_from_the_rejection_sample_output(runs, rejection_sample, write_jsonl):
    good = "[Verse]\n月光洒满小村庄\n晚风吹过稻花香"
    pairs = write_jsonl("pairs.jsonl", [{"controls": {"topic": t, "rhyme": "江阳"}, "chosen": good,
                                         "rejected": "[Verse]\n月光月光月光\n月光月光"} for t in ("夏", "秋", "冬", "春")])
    out = runs / "dpo"
    lyrictool("dpo", "recipes/tiny/dpo.yaml", "--set", f"model.name={rejection_sample}", *LORA, *STEPS,
              "--set", f"data.train={pairs}", "--set", "data.eval_fraction=0", "--set", "margin_pairs=2",
              "--set", "train.max_length=128", "--set", f"output_dir={out}")
    s = summary(out)
    assert s["metrics"]["global_step"] == 2 and s["model"]["reference"] == "adapter disabled"
    before, after = s["metrics"]["logprob_margin"]["before"], s["metrics"]["logprob_margin"]["after"]
    assert before["logp_chosen"] < 0 and after["logp_rejected"] < 0
    assert_qwen_model_generates(out, adapter=True)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_ppo(runs, sft_runs, algorithm):
    out = runs / f"ppo-{algorithm}"
    lyrictool("ppo", "recipes/tiny/ppo.yaml", "--set", f"algorithm={algorithm}", "--set", f"model.name={sft_runs['full']}",
              *(LORA if algorithm == "rloo" else []), "--set", "train.num_generations=2",
              "--set", "train.max_completion_length=8", "--set", "train.per_device_train_batch_size=2",
              "--set", "train.max_steps=1", "--set", "train.logging_steps=1", "--set", "data.max_rows=4",
              *SMALL_GEN, "--set", f"output_dir={out}")
    s = summary(out)
    assert s["command"] == "ppo" and s["metrics"]["global_step"] == 1
    assert set(s["metrics"]["reward_last5"]) == {"rhyme", "line_length", "format", "safety", "total"}
    assert s["metrics"]["generation"]["before"]["reward"] is not None and s["model"]["lora"] == (algorithm == "rloo")
    assert_qwen_model_generates(out, adapter=algorithm == "rloo")


def test_eval_compares_base_and_sft_with_the_scorer(runs, sft_runs, scorer):
    out = runs / "eval"
    lyrictool("eval", "recipes/tiny/eval.yaml",
              "--set", f"systems=[{{name: base, model: {QWEN}}}, {{name: sft, model: {sft_runs['full']}}}]",
              "--set", f"scorer={scorer}", "--set", "generation.num_prompts=2", "--set", "generation.max_new_tokens=8",
              "--set", "bootstrap_resamples=100", "--set", f"output_dir={out}", "--format", "json")
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert list(result["systems"]) == ["base", "sft"]
    for name, system in result["systems"].items():
        assert system["n"] == 2 and system["scorer"]["n"] == 2
        songs = [json.loads(line) for line in (out / "generations" / f"{name}.jsonl").read_text().splitlines()]
        assert len(songs) == 2 and all("〔" not in s["lyrics"] and "<|" not in s["lyrics"] for s in songs)
    assert result["comparison"]["pairs"][0]["b"] == "sft"


def test_serve_with_the_openai_client(sft_runs, tmp_path):
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    with serving(["recipes/tiny/serve.yaml", "--model", str(sft_runs["lora"]), "--set", "limits.max_tokens=16",
                  "--set", "limits.default_max_tokens=8"], tmp_path / "serve.log") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "写一首关于村庄的歌"}]
        r = client.chat.completions.create(model="lyrictool-tiny", messages=messages, max_tokens=8, n=2)
        assert len(r.choices) == 2 and 1 <= r.usage.completion_tokens <= 16
        # prompt tokens are Qwen BPE tokens of the chat template's output (default system message included)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(sft_runs["lora"])
        expected = len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"])
        assert r.usage.prompt_tokens == expected
        stream = client.chat.completions.create(model="lyrictool-tiny", messages=messages, max_tokens=8, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_body={"controls": {"rhyme": "江阳"}})
        chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert "<|" not in text and "〔" not in text
        assert chunks[-1].usage.completion_tokens <= 8
